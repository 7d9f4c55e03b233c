// Package bootstrap creates and maintains the files a kubox node needs before
// any component starts: the certificate authorities and leaf certificates of
// the cluster, the service-account signing key, the apiserver's
// secrets-at-rest encryption config, and the kubeconfigs of the in-process
// components and of the admin.
//
// Ensure is idempotent and safe to call on every start. It never overwrites
// or deletes an existing key or certificate: what is on disk is reused, a
// missing leaf is issued again from its CA, and a leaf that no longer fits
// (a serving certificate missing a SAN the node now needs, a leaf signed by
// another CA, a leaf close to expiry, see NeedsRenewal) is renamed to
// <name>.old-<unix time> and replaced. Kubeconfigs are derived data and are
// rewritten whenever their content would change.
//
// Files under Config.Dir (keys and the encryption config 0600, certs 0644,
// directories 0700):
//
//	ca.crt, ca.key                                   cluster CA: signs serving certs
//	client-ca.crt, client-ca.key                     client CA: signs every client cert
//	request-header-ca.crt, request-header-ca.key     front-proxy (request header) CA
//	front-proxy-client.crt, front-proxy-client.key   CN front-proxy-client
//	apiserver.crt, apiserver.key                     apiserver serving cert
//	apiserver-kubelet-client.crt, .key               apiserver -> kubelet client cert
//	kubelet-client.crt, kubelet-client.key           CN system:node:<node name>
//	controller-manager.crt, controller-manager.key   CN system:kube-controller-manager
//	scheduler.crt, scheduler.key                     CN system:kube-scheduler
//	admin.crt, admin.key                             CN kubox-admin, O system:masters
//	sa.key, sa.pub                                   service-account signing key pair
//	encryption-config.yaml                           apiserver EncryptionConfiguration
//	etcd/server-ca.crt, etcd/server-ca.key           etcd server CA (also signs etcd clients)
//	etcd/peer-ca.crt, etcd/peer-ca.key               etcd peer CA
//	etcd/server.crt, etcd/server.key                 etcd serving cert
//	etcd/peer.crt, etcd/peer.key                     etcd peer cert (server and client auth)
//	etcd/client.crt, etcd/client.key                 CN kube-apiserver-etcd-client
//
// Files under Config.KubeconfigDir (0600, certificates embedded):
//
//	admin.kubeconfig, controller-manager.kubeconfig,
//	scheduler.kubeconfig, kubelet.kubeconfig
package bootstrap

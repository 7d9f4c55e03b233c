package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubox/kubox/embedded/etcd"
)

// The etcd space verbs (`kubox etcd status|defrag|alarm`); kubox server's
// own space keeper is embedded/etcd's Space.

// EtcdMemberStatus is one member as `kubox etcd status` shows it.
type EtcdMemberStatus struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Learner  bool   `json:"learner"`
	Leader   bool   `json:"leader"`
	Endpoint string `json:"endpoint"`
	etcd.Usage
	Fragmentation float64 `json:"fragmentation"` // free share of dbSize, 0 to 1
	Version       string  `json:"version,omitempty"`
	Error         string  `json:"error,omitempty"` // the member did not answer
}

// EtcdAlarm is a raised etcd alarm.
type EtcdAlarm struct {
	Member string `json:"member"` // name, or ID if unknown
	Alarm  string `json:"alarm"`  // NOSPACE, CORRUPT
}

// EtcdStatus is the cluster's etcd as `kubox etcd status` shows it.
type EtcdStatus struct {
	Members []EtcdMemberStatus `json:"members"`
	Leader  string             `json:"leader"`
	Alarms  []EtcdAlarm        `json:"alarms"`
}

// statusTimeout bounds each member's answer.
const statusTimeout = 5 * time.Second

// EtcdStatus asks every member for its status, and the cluster for its
// alarms. A member that does not answer is listed with its error.
func (a *Admin) EtcdStatus(ctx context.Context) (EtcdStatus, error) {
	cli, list, err := a.etcd(ctx)
	if err != nil {
		return EtcdStatus{}, err
	}
	defer cli.Close()
	st := EtcdStatus{Members: []EtcdMemberStatus{}, Alarms: []EtcdAlarm{}}
	names := map[uint64]string{}
	for _, m := range list.Members {
		names[m.ID] = memberName(m.Name, m.ID)
		ms := EtcdMemberStatus{ID: fmt.Sprintf("%x", m.ID), Name: m.Name, Learner: m.IsLearner}
		if len(m.ClientURLs) == 0 {
			ms.Error = "not started yet"
			st.Members = append(st.Members, ms)
			continue
		}
		ms.Endpoint = m.ClientURLs[0]
		sctx, cancel := context.WithTimeout(ctx, statusTimeout)
		resp, err := cli.Status(sctx, ms.Endpoint)
		cancel()
		if err != nil {
			ms.Error = err.Error()
		} else {
			ms.Usage = etcd.Usage{Size: resp.DbSize, InUse: resp.DbSizeInUse, Quota: resp.DbSizeQuota}
			ms.Fragmentation = ms.Usage.Fragmentation()
			ms.Leader = resp.Leader == m.ID
			ms.Version = resp.Version
		}
		if ms.Leader {
			st.Leader = names[m.ID]
		}
		st.Members = append(st.Members, ms)
	}
	actx, cancel := context.WithTimeout(ctx, statusTimeout)
	alarms, err := cli.AlarmList(actx)
	cancel()
	if err != nil {
		return st, fmt.Errorf("list etcd alarms: %w", err)
	}
	for _, al := range alarms.Alarms {
		st.Alarms = append(st.Alarms, EtcdAlarm{Member: alarmMember(names, al.MemberID), Alarm: al.Alarm.String()})
	}
	return st, nil
}

func alarmMember(names map[uint64]string, id uint64) string {
	if n, ok := names[id]; ok {
		return n
	}
	return fmt.Sprintf("%x", id)
}

// DefragResult is what `kubox etcd defrag` did.
type DefragResult struct {
	Member   string        `json:"member"`
	Before   etcd.Usage    `json:"before"`
	After    etcd.Usage    `json:"after"`
	Duration time.Duration `json:"durationNanoseconds"`
}

// Defrag defragments this box's etcd member (only: each member blocks its
// clients while it is defragmented). started, if set, gets the figures
// before it begins.
func (a *Admin) Defrag(ctx context.Context, started func(name string, before etcd.Usage)) (DefragResult, error) {
	tlsCfg, err := a.etcdTLS()
	if err != nil {
		return DefragResult{}, err
	}
	ep := a.localEtcdURL()
	cli, err := etcdClient([]string{ep}, tlsCfg)
	if err != nil {
		return DefragResult{}, err
	}
	defer cli.Close()
	status := func() (*clientv3.StatusResponse, error) {
		sctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		return cli.Status(sctx, ep)
	}
	before, err := status()
	if err != nil {
		return DefragResult{}, fmt.Errorf("etcd on this box (%s) did not answer: %w (is kubox server running? set --data-dir and --etcd-client-port as for it)", ep, err)
	}
	name := a.NodeName
	if before.IsLearner {
		return DefragResult{}, errors.New("this box's etcd member is a learner, and etcd refuses to defragment learners from outside: kubox server defragments it by itself when that pays (at start and every hour)")
	}
	res := DefragResult{Member: name, Before: usageOf(before)}
	if started != nil {
		started(name, res.Before)
	}
	begin := time.Now()
	if _, err := cli.Defragment(ctx, ep); err != nil {
		return res, fmt.Errorf("defragment etcd on this box: %w", err)
	}
	res.Duration = time.Since(begin)
	after, err := status()
	if err != nil {
		return res, fmt.Errorf("defragmented, but etcd did not answer afterwards: %w", err)
	}
	res.After = usageOf(after)
	return res, nil
}

// LocalEtcdSpace asks this box's member for its usage and whether it has
// a NOSPACE alarm raised (no quorum needed).
func (a *Admin) LocalEtcdSpace(ctx context.Context) (etcd.Usage, bool, error) {
	tlsCfg, err := a.etcdTLS()
	if err != nil {
		return etcd.Usage{}, false, err
	}
	ep := a.localEtcdURL()
	cli, err := etcdClient([]string{ep}, tlsCfg)
	if err != nil {
		return etcd.Usage{}, false, err
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	resp, err := cli.Status(sctx, ep)
	if err != nil {
		return etcd.Usage{}, false, err
	}
	nospace := false
	for _, e := range resp.Errors { // alarms are listed there as text
		nospace = nospace || strings.Contains(e, etcdserverpb.AlarmType_NOSPACE.String())
	}
	return usageOf(resp), nospace, nil
}

func usageOf(r *clientv3.StatusResponse) etcd.Usage {
	return etcd.Usage{Size: r.DbSize, InUse: r.DbSizeInUse, Quota: r.DbSizeQuota}
}

// DisarmAlarms disarms every raised etcd alarm and returns those it
// disarmed, and the members whose database is still too near the quota
// (the next writes raise NOSPACE again there).
func (a *Admin) DisarmAlarms(ctx context.Context) (disarmed []EtcdAlarm, stillFull []EtcdMemberStatus, err error) {
	st, err := a.EtcdStatus(ctx)
	if err != nil {
		return nil, nil, err
	}
	cli, list, err := a.etcd(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer cli.Close()
	names := map[uint64]string{}
	for _, m := range list.Members {
		names[m.ID] = memberName(m.Name, m.ID)
	}
	dctx, cancel := context.WithTimeout(ctx, statusTimeout)
	resp, err := cli.AlarmDisarm(dctx, &clientv3.AlarmMember{})
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("disarm etcd alarms: %w", err)
	}
	disarmed = []EtcdAlarm{}
	for _, al := range resp.Alarms {
		disarmed = append(disarmed, EtcdAlarm{Member: alarmMember(names, al.MemberID), Alarm: al.Alarm.String()})
	}
	for _, m := range st.Members {
		if m.Error == "" && !etcd.CanDisarm(m.Usage) {
			stillFull = append(stillFull, m)
		}
	}
	return disarmed, stillFull, nil
}

package server

import "fmt"

// ExitRemoved is kubox server's exit status when this box's etcd member was
// removed from the cluster (`kubox node remove`): starting it again cannot
// help, so the systemd unit does not restart on it (RestartPreventExitStatus).
// 78 is EX_CONFIG of sysexits.h: the box's configuration (its data dir) must
// change before it can run.
const ExitRemoved = 78

// RemovedError is returned when this box's etcd member was removed from the
// cluster, whether while it ran or while it was down.
type RemovedError struct{ DataDir string }

func (e *RemovedError) Error() string {
	return fmt.Sprintf("this box's etcd member was removed from the cluster (kubox node remove, or kubox etcd recover on a surviving box), so it cannot start with this data; "+
		"%s is kept: to bring the box back, move it aside and join again with a new token (kubox token create on a member)", e.DataDir)
}

// ExitCode is the process exit status for this error.
func (e *RemovedError) ExitCode() int { return ExitRemoved }

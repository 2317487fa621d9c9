package wire

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// Environment variables through which a cluster process learns who it is.
const (
	EnvClusterID  = "SHARDVISOR_CLUSTER_ID"
	EnvShardIDs   = "SHARDVISOR_SHARD_IDS"   // comma-separated
	EnvShardCount = "SHARDVISOR_SHARD_COUNT" // the bot's total
	// EnvChannelFD is set, to the descriptor number, only when a supervisor
	// passed its channel: a cluster started by hand or by compose has no
	// channel, and a descriptor 3 it may inherit (socket activation, a shell)
	// must not be mistaken for one.
	EnvChannelFD = "SHARDVISOR_CHANNEL_FD"
)

// ChildFD is the descriptor number at which a cluster process finds its end
// of the channel (the first of exec.Cmd.ExtraFiles).
const ChildFD = 3

// Socketpair returns the two ends of a new channel: the supervisor's as a
// net.Conn, the child's as a file to hand to exec.Cmd.ExtraFiles. The caller
// closes the child's file once the child has started. Neither end has a path
// in the filesystem, so no other process can connect to it.
func Socketpair() (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "shardvisor-supervisor")
	child := os.NewFile(uintptr(fds[1]), "shardvisor-cluster")
	conn, err := net.FileConn(parent) // dups the descriptor
	parent.Close()
	if err != nil {
		child.Close()
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return conn, child, nil
}

// FileConn opens the channel end a child inherited at descriptor fd, and
// checks that it is a Unix socket.
func FileConn(fd uintptr) (net.Conn, error) {
	f := os.NewFile(fd, "shardvisor-channel")
	if f == nil {
		return nil, fmt.Errorf("open channel fd %d: not a valid descriptor", fd)
	}
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("open channel fd %d: %w", fd, err)
	}
	if _, ok := conn.(*net.UnixConn); !ok {
		conn.Close()
		return nil, fmt.Errorf("open channel fd %d: not a unix socket", fd)
	}
	return conn, nil
}

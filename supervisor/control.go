package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// The control socket is where what changes things is asked for: the
// metrics port has no authentication and only reads. It is a unix socket
// with mode 0660, so only the service's user and group (and root) reach
// it, and every request is logged with the asker's uid (SO_PEERCRED).
//
// Its protocol is one JSON ControlRequest line from the client, one JSON
// ControlReply line back, then the supervisor closes the connection.

// Control commands.
const (
	ControlStatus  = "status"  // the status, as /status has it
	ControlRoll    = "roll"    // a rolling restart, as SIGHUP
	ControlRestart = "restart" // one cluster restarted; the reply comes once it is ready again
	ControlReshard = "reshard" // a reshard begun (reshard.go); the reply comes once it is under way
)

// ControlRequest is what a client asks.
type ControlRequest struct {
	Command string `json:"command"`
	Cluster int    `json:"cluster,omitempty"` // for restart
	Shards  int    `json:"shards,omitempty"`  // for reshard: the new count; 0 (ReshardAuto) takes Discord's recommendation
}

// ControlReply is the supervisor's answer: Error is empty when it did
// what was asked.
type ControlReply struct {
	Error   string    `json:"error,omitempty"`
	Message string    `json:"message,omitempty"`
	Status  *Snapshot `json:"status,omitempty"`
}

// controlMode is the socket's permissions.
const controlMode = 0o660

// controlReadTimeout bounds the wait for a client's request line.
const controlReadTimeout = 10 * time.Second

// ControlListener is the control socket, listening.
type ControlListener struct {
	ln   *net.UnixListener
	path string
}

// ListenControl creates the control socket at path with mode 0660. The
// socket is made under a temporary name, given its mode, then renamed to
// path, so that nobody can connect to it before its mode is set. A socket
// left at path by a supervisor that died is replaced; one a live process
// listens on is an error.
func ListenControl(path string) (*ControlListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("-control-socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("-control-socket %s: another process listens on it (a supervisor already running?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("-control-socket %s: remove the stale socket: %w", path, err)
		}
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("-control-socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // its name changes; Close removes path
	if err := os.Chmod(tmp, controlMode); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("-control-socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("-control-socket %s: %w", path, err)
	}
	return &ControlListener{ln: ln, path: path}, nil
}

// Path is where the socket is.
func (l *ControlListener) Path() string { return l.path }

// Close stops listening and removes the socket.
func (l *ControlListener) Close() error {
	err := l.ln.Close()
	os.Remove(l.path)
	return err
}

// ServeControl answers requests on l until l is closed; it returns nil
// then, once every request under way has been answered or its client has
// gone. A restart under way when the supervisor stops ends with the stop.
func (s *Supervisor) ServeControl(l *ControlListener) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("control socket %s: %w", l.path, err)
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveControlConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// peer is who is on the other end of a control connection.
type peer struct{ uid, pid int }

func peerOf(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return peer{uid: int(cred.Uid), pid: int(cred.Pid)}, nil
}

func (s *Supervisor) serveControlConn(c *net.UnixConn) {
	p, err := peerOf(c)
	if err != nil {
		s.log.Warn("control: cannot tell who connected; refusing", "err", err)
		return
	}
	log := s.log.With("peer_uid", p.uid, "peer_pid", p.pid)
	c.SetReadDeadline(time.Now().Add(controlReadTimeout))
	line, err := bufio.NewReaderSize(c, 4096).ReadSlice('\n')
	if err != nil {
		log.Warn("control: no request read", "err", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	var req ControlRequest
	var rep ControlReply
	if err := json.Unmarshal(line, &req); err != nil {
		rep.Error = fmt.Sprintf("a request is one JSON line: %v", err)
	} else {
		rep = s.control(req, p, log)
	}
	json.NewEncoder(c).Encode(rep)
}

// control does what req asks and logs it with the peer.
func (s *Supervisor) control(req ControlRequest, p peer, log *slog.Logger) ControlReply {
	who := fmt.Sprintf("uid %d (pid %d)", p.uid, p.pid)
	switch req.Command {
	case ControlStatus:
		log.Debug("control: status asked")
		snap := s.Snapshot()
		return ControlReply{Status: &snap}
	case ControlRoll:
		if s.isStopping() || s.rolling.Load() {
			log.Info("control: rolling restart asked; one is already under way, or the supervisor stops")
			return ControlReply{Error: errChangeUnderWay.Error() + ", or the supervisor stops"}
		}
		log.Info("control: rolling restart asked")
		s.store.Event(Event{Kind: EventControl, ClusterID: -1, Message: "rolling restart asked by " + who})
		s.RollingRestart()
		return ControlReply{Message: "rolling restart begun: one cluster at a time, each once the previous is ready (follow it with ctl status or the page)"}
	case ControlRestart:
		log.Info("control: restart of one cluster asked", "cluster_id", req.Cluster)
		s.store.Event(Event{Kind: EventControl, ClusterID: req.Cluster, Message: "restart asked by " + who})
		start := time.Now()
		if err := s.RestartCluster(req.Cluster); err != nil {
			log.Warn("control: restart of one cluster failed", "cluster_id", req.Cluster, "err", err)
			return ControlReply{Error: err.Error()}
		}
		took := time.Since(start).Round(time.Millisecond)
		log.Info("control: cluster restarted and ready", "cluster_id", req.Cluster, "took", took)
		return ControlReply{Message: fmt.Sprintf("cluster %d restarted and ready in %v", req.Cluster, took)}
	case ControlReshard:
		if req.Shards < 0 {
			return ControlReply{Error: fmt.Sprintf("reshard to %d shards: a count of shards, or 0 for Discord's recommendation", req.Shards)}
		}
		log.Info("control: reshard asked", "shards", req.Shards)
		s.store.Event(Event{Kind: EventControl, ClusterID: -1, Message: "reshard asked by " + who})
		ctx, cancel := context.WithTimeout(context.Background(), controlReadTimeout)
		defer cancel()
		st, err := s.Reshard(ctx, req.Shards, fmt.Sprintf("ctl, uid %d, pid %d", p.uid, p.pid))
		if err != nil {
			return ControlReply{Error: err.Error()}
		}
		return ControlReply{Message: fmt.Sprintf("reshard %d → %d shards in %d clusters begun: the new fleet connects in shadow and goes live when every shard is ready (follow it with ctl status or the page)",
			st.From, st.To, len(st.Clusters))}
	}
	log.Warn("control: unknown command", "command", req.Command)
	return ControlReply{Error: fmt.Sprintf("unknown command %q; commands: %s, %s, %s CLUSTER, %s [SHARDS]", req.Command, ControlStatus, ControlRoll, ControlRestart, ControlReshard)}
}

// RestartCluster replaces cluster id's process with a new one, from the
// binary now on disk, as a rolling restart replaces each (a restart does
// not wait for a backoff), and returns once the new process is ready, or
// with why not. It refuses while a rolling restart or another restart is
// under way, or the supervisor stops.
func (s *Supervisor) RestartCluster(id int) error {
	var r *runner
	var ids []int
	for _, x := range s.live().runners {
		ids = append(ids, x.cluster.ID)
		if x.cluster.ID == id {
			r = x
		}
	}
	switch {
	case r == nil:
		return fmt.Errorf("restart cluster %d: not one of this supervisor's clusters (%s)", id, FormatRanges(ids))
	case s.isStopping():
		return fmt.Errorf("restart cluster %d: the supervisor stops", id)
	case !s.rolling.CompareAndSwap(false, true):
		return fmt.Errorf("restart cluster %d: %w", id, errChangeUnderWay)
	}
	defer s.rolling.Store(false)
	if err := s.rollOne(r); err != nil {
		return fmt.Errorf("restart cluster %d: %w", id, err)
	}
	return nil
}

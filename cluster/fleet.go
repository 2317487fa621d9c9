package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Fleet calls named requests (Bot.Serve) on the bot's clusters: one, every
// one, or the one that has a guild. The supervisor routes them over the
// channel it has with every cluster. Get it from an Interaction, from the
// *Local a Serve handler receives, or with FleetFrom from their contexts.
//
// Every call has a deadline: ctx's, or DefaultFleetTimeout when ctx has
// none, and never more than a minute. A cluster that is down, restarting,
// not yet ready or run by another supervisor answers ErrUnavailable at
// once. Requests and answers are JSON: a request is json.Marshal(req) (a
// json.RawMessage is sent as it is, nil as no data), at most
// wire.MaxFleetRequestData bytes; an answer at most wire.MaxFleetAnswerData.
type Fleet struct {
	local *Local
	link  *Link // nil when the cluster runs without a supervisor
}

// DefaultFleetTimeout bounds a fleet call whose context has no deadline.
const DefaultFleetTimeout = 5 * time.Second

// Answer is one cluster's answer to a fleet call: its data, or why it has
// none.
type Answer struct {
	ClusterID int
	Data      json.RawMessage
	Err       error
}

// Fleet call errors: a *FleetError matches one of these with errors.Is, or
// context.DeadlineExceeded when the cluster did not answer in time.
var (
	ErrUnavailable   = errors.New("cluster unavailable")
	ErrNoSuchRequest = errors.New("no such request")
	ErrBusy          = errors.New("too many fleet calls in flight")
	ErrTooLarge      = errors.New("too large")
	ErrHandlerPanic  = errors.New("handler panicked")
	ErrBadRequest    = errors.New("bad fleet call")
)

// FleetError is a fleet call's failure as the supervisor or the answering
// cluster reported it.
type FleetError struct {
	Name      string
	ClusterID int // -1: the call as a whole
	Code      wire.FleetCode
	Message   string
}

func (e *FleetError) Error() string {
	who := "the fleet"
	if e.ClusterID >= 0 {
		who = "cluster " + strconv.Itoa(e.ClusterID)
	}
	return fmt.Sprintf("fleet call %q to %s: %s: %s", e.Name, who, e.Code, e.Message)
}

// Is matches the sentinel of e's code.
func (e *FleetError) Is(target error) bool {
	switch e.Code {
	case wire.FleetUnavailable:
		return target == ErrUnavailable
	case wire.FleetNoSuchName:
		return target == ErrNoSuchRequest
	case wire.FleetBusy:
		return target == ErrBusy
	case wire.FleetTooLarge:
		return target == ErrTooLarge
	case wire.FleetPanic:
		return target == ErrHandlerPanic
	case wire.FleetDeadline:
		return target == context.DeadlineExceeded
	case wire.FleetBadRequest:
		return target == ErrBadRequest
	}
	return false
}

// Broadcast calls name on every cluster of the plan. It returns one Answer
// per cluster, in cluster order, each with its data or its error: partial
// results are explicit. The error is for the call as a whole (the request
// could not be sent, or the caller has too many calls in flight).
func (f *Fleet) Broadcast(ctx context.Context, name string, req any) ([]Answer, error) {
	return f.call(ctx, &wire.FleetCall{Name: name, To: wire.ToAll}, req)
}

// Ask calls name on one cluster. The error is the Answer's.
func (f *Fleet) Ask(ctx context.Context, clusterID int, name string, req any) (Answer, error) {
	if clusterID < 0 {
		return Answer{ClusterID: clusterID}, &FleetError{Name: name, ClusterID: -1, Code: wire.FleetBadRequest, Message: "negative cluster id"}
	}
	return f.one(f.call(ctx, &wire.FleetCall{Name: name, To: wire.ToCluster, Cluster: clusterID}, req))
}

// ForGuild calls name on the cluster that has the guild: the one running
// shard (guild_id >> 22) % shard_count. The error is the Answer's.
func (f *Fleet) ForGuild(ctx context.Context, guildID string, name string, req any) (Answer, error) {
	g, err := strconv.ParseUint(guildID, 10, 64)
	if err != nil || g == 0 {
		return Answer{ClusterID: -1}, &FleetError{Name: name, ClusterID: -1, Code: wire.FleetBadRequest, Message: fmt.Sprintf("guild id %q is not a snowflake", guildID)}
	}
	return f.one(f.call(ctx, &wire.FleetCall{Name: name, To: wire.ToGuild, Guild: g}, req))
}

func (f *Fleet) one(answers []Answer, err error) (Answer, error) {
	if err != nil {
		return Answer{ClusterID: -1, Err: err}, err
	}
	if len(answers) != 1 {
		err := fmt.Errorf("fleet call: %d answers where one was due", len(answers))
		return Answer{ClusterID: -1, Err: err}, err
	}
	return answers[0], answers[0].Err
}

func (f *Fleet) call(ctx context.Context, c *wire.FleetCall, req any) ([]Answer, error) {
	refuse := func(code wire.FleetCode, format string, a ...any) ([]Answer, error) {
		return nil, &FleetError{Name: c.Name, ClusterID: -1, Code: code, Message: fmt.Sprintf(format, a...)}
	}
	if err := wire.CheckFleetName(c.Name); err != nil {
		return refuse(wire.FleetBadRequest, "%v", err)
	}
	if req != nil {
		// A json.RawMessage too: compacted and escaped, it is what travels.
		b, err := json.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("fleet call %q: encode request: %w", c.Name, err)
		}
		c.Data = b
	}
	if len(c.Data) > wire.MaxFleetRequestData {
		return refuse(wire.FleetTooLarge, "request of %d bytes exceeds the limit of %d", len(c.Data), wire.MaxFleetRequestData)
	}
	c.Timeout = DefaultFleetTimeout
	if d, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(d)
	}
	c.Timeout = min(c.Timeout, wire.MaxFleetTimeout)
	if c.Timeout <= 0 || ctx.Err() != nil {
		return nil, fmt.Errorf("fleet call %q: %w", c.Name, cmp(context.Cause(ctx), context.DeadlineExceeded))
	}
	var answers []Answer
	var err error
	if f.link != nil {
		answers, err = f.link.fleetCall(ctx, c)
	} else {
		answers, err = f.alone(ctx, c)
	}
	slices.SortFunc(answers, func(a, b Answer) int { return a.ClusterID - b.ClusterID })
	return answers, err
}

func cmp(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// alone answers a call in a cluster that runs without a supervisor: it
// can reach only itself.
func (f *Fleet) alone(ctx context.Context, c *wire.FleetCall) ([]Answer, error) {
	l := f.local
	self := c.To == wire.ToAll || (c.To == wire.ToCluster && c.Cluster == l.ClusterID) ||
		(c.To == wire.ToGuild && slices.Contains(l.ShardIDs, int((c.Guild>>22)%uint64(l.ShardCount))))
	if !self {
		id := c.Cluster
		if c.To == wire.ToGuild {
			id = -1
		}
		return []Answer{{ClusterID: id, Err: &FleetError{Name: c.Name, ClusterID: id, Code: wire.FleetUnavailable,
			Message: "this cluster runs without a supervisor and reaches no other cluster"}}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	r := l.serve(ctx, &wire.FleetRequest{Name: c.Name, Timeout: c.Timeout, Data: c.Data})
	return []Answer{answerOf(c.Name, l.ClusterID, r.Code, r.Error, r.Data)}, nil
}

// answerOf turns a wire outcome into an Answer.
func answerOf(name string, cluster int, code wire.FleetCode, msg string, data json.RawMessage) Answer {
	if code != wire.FleetOK {
		return Answer{ClusterID: cluster, Err: &FleetError{Name: name, ClusterID: cluster, Code: code, Message: msg}}
	}
	return Answer{ClusterID: cluster, Data: data}
}

// Decode decodes each successful answer into a T, by cluster id. The error
// joins the failed answers' errors and those that do not decode, so a
// caller can use the partial result and still see what is missing.
func Decode[T any](answers []Answer) (map[int]T, error) {
	out := make(map[int]T, len(answers))
	var errs []error
	for _, a := range answers {
		v, err := As[T](a, a.Err)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[a.ClusterID] = v
	}
	return out, errors.Join(errs...)
}

// As decodes one answer into a T; it takes Ask's and ForGuild's results as
// they are: v, err := cluster.As[Stats](fleet.Ask(ctx, 2, cluster.StatsRequest, nil)).
func As[T any](a Answer, err error) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	if a.Err != nil {
		return v, a.Err
	}
	if err := json.Unmarshal(a.Data, &v); err != nil {
		return v, fmt.Errorf("decode the answer of cluster %d: %w", a.ClusterID, err)
	}
	return v, nil
}

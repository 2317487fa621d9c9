// Package ratelimit is the supervisor's model of Discord's REST rate
// limits for every request of the bot: each cluster's HTTP transport asks
// it for a ticket before a request (Ticket: how long to wait) and reports
// the answer's status and rate limit headers after (Report, or Cancel for
// a request without an answer). It does no I/O; time is passed in.
//
// # The model
//
// A request is named by its key (RouteKey): method, path with the major
// parameter kept and other ids replaced. A key's route is the key without
// the major parameter (Route). Discord names each route's bucket by
// X-RateLimit-Bucket, a hash shared by the routes that share the bucket,
// and keeps the bucket's state apart per major parameter. The limiter
// learns a route's hash from its first answer; the state (limit, window,
// requests taken) is per hash and major parameter, so that routes sharing
// a hash share it, and a new channel of a known route starts with the
// hash's full limit at once.
//
// A bucket is a sequence of windows like Discord's: a window opens with
// its first request, takes up to the limit until its period less Margin
// has passed, and the next window opens no sooner than its period plus
// Margin after the first one opened (Margin absorbs the difference in
// travel time between requests). Tickets are placed in the earliest
// window with room, so reservations count requests in flight and those
// still waiting: 16 callers asking at once for a 5 per 5 s bucket get 5
// tickets of wait 0 and 5 each at about 5.1 s, 10.2 s and 15.3 s. Discord's
// answers correct the model: X-RateLimit-Remaining less the tickets still
// out is how many more may be sent before the window's reset (only ever
// lowered by answers of the same window, which may arrive out of order),
// and a 429 closes the bucket until Retry-After.
//
// Before a route's first answer nothing is known, not even which bucket
// it shares. The limiter then lets one request through per Probe (1 s),
// the first at once, rather than guess a limit: a cold start of many
// clusters sends one request per route and major parameter, learns the
// real limit within a round trip, and only the tickets handed out in that
// round trip keep the probe's spacing (a route stricter than one per
// second can still see a 429 on its second probe). Routes whose answers
// carry no rate limit headers are then only under the global limit.
//
// The global limit (Config.Global per second) applies to every ticket but
// those of interaction callbacks and webhook-token routes (OutsideGlobal).
// It is kept exactly, in 10 ms slots: no interval of 1.03 s holds more
// than Global send times (30 ms for the way to Discord), which costs 4% of
// the rate when saturated.
// A ticket whose bucket makes it wait more than about 80 s takes no
// global slot (the slots reach no further); there are few of those.
// A global 429 pauses every ticket under it for its Retry-After, and so
// does a 429 without rate limit headers (Cloudflare, most likely).
//
// Invalid requests (401, 403, 429 but of scope shared) are counted in a
// sliding window of InvalidWindow, in 60 slots. Past SlowAt of
// InvalidLimit the limiter slows down: buckets that had an invalid answer
// within SlowRecent get half their limit per window until the count is
// back under; it logs when it starts and stops, and shardvisor_rest_slowdown
// says so.
//
// Tickets not reported within TicketTTL of their send time are forgotten;
// keys and buckets idle as long are dropped. Ticket and Report cost well
// under a microsecond together (BenchmarkTicket). The times passed to
// them must come from the clock of Config.Now.
//
// The margin costs most on short windows: a bucket of one request per
// 250 ms that is kept busy runs at one per 350 ms when its tickets are
// handed out ahead of the answers (when an answer comes first, its reset
// is used as is).
//
// # What it does not do
//
// It sees only the requests that ask it: a request made around shardvisor
// (another process with the same token, a cluster that fell back to its
// local limits) is known only through the Remaining of later answers and
// the 429s it causes. It cannot revise a wait it handed out: a ticket
// reserved before an answer changed the picture (a probe's second
// request, or a reset later than assumed) keeps its time. It does not
// retry: a 429 is the caller's to retry, with a new ticket. It knows no
// route's limit in advance (Discord publishes none), does not special-case
// the separate bucket of deleting messages older than two weeks, and
// trusts that all requests reach Discord from one IP, for the invalid
// request count.
package ratelimit

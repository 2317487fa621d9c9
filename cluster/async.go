package cluster

import "reflect"

// inGoroutine returns a discordgo event handler that starts handler in a
// goroutine of its own at each event and returns at once: what discordgo
// does for every handler unless Session.SyncEvents, which the shards set
// for their own handlers' sake (see newShard). allow, if not nil, is asked
// first, in discordgo's goroutine, whether to start handler for the event
// at all (a cluster in shadow hands no event to the bot). The result has
// handler's own type, so that Session.AddHandler accepts (or refuses) it
// exactly as it would handler. Anything but a function of two arguments
// and no results is returned as it is, for AddHandler to refuse.
func inGoroutine(handler any, allow func(event any) bool) any {
	v := reflect.ValueOf(handler)
	if v.Kind() != reflect.Func || v.IsNil() || v.Type().NumIn() != 2 || v.Type().NumOut() != 0 {
		return handler
	}
	return reflect.MakeFunc(v.Type(), func(args []reflect.Value) []reflect.Value {
		if allow == nil || allow(args[1].Interface()) {
			go v.Call(args)
		}
		return nil
	}).Interface()
}

package cluster

import "reflect"

// inGoroutine returns a discordgo event handler that starts handler in a
// goroutine of its own at each event and returns at once: what discordgo
// does for every handler unless Session.SyncEvents, which the shards set
// for their own handlers' sake (see newShard). The result has handler's
// own type, so that Session.AddHandler accepts (or refuses) it exactly as
// it would handler. Anything but a function of two arguments and no
// results is returned as it is, for AddHandler to refuse.
func inGoroutine(handler any) any {
	v := reflect.ValueOf(handler)
	if v.Kind() != reflect.Func || v.IsNil() || v.Type().NumIn() != 2 || v.Type().NumOut() != 0 {
		return handler
	}
	return reflect.MakeFunc(v.Type(), func(args []reflect.Value) []reflect.Value {
		go v.Call(args)
		return nil
	}).Interface()
}

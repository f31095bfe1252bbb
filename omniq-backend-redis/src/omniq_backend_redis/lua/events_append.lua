-- append_many: the events of ARGV (see events_lib.lua), all written.
return append_events(events_batch(1), nil)

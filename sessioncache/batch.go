package sessioncache

// Entry is one key and value, for stores that write several in one round
// trip (see sessioncache/redis Store.PutBatch). The store must not modify
// Val.
type Entry struct {
	Key string
	Val []byte
}

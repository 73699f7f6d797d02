//go:build !unix

package proxy

import "net"

// probe cannot look into a connection here: an idle one counts as open.
func probe(net.Conn) bool { return true }

package main

import (
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// A route configuration of a large mesh reaches a proxy in gRPC's buffers, one per 16 kB HTTP/2
// frame. Joining them into one slice to decode it copied every byte once more (a fifth of the
// fleet's CPU profile during a VirtualService change), on the cores pilot needs to send it, for
// bytes the fleet only looks into for one virtual host. So route configurations are decoded in
// their pieces: the few fields a proxy needs (version, nonce, type) are copied out, and the
// resource's value stays in gRPC's buffers (spreads) until the response is released.

// chunks is a byte string in pieces.
type chunks [][]byte

// bytes is c in one slice: its only piece, or a copy of all of them.
func (c chunks) bytes() []byte {
	if len(c) == 1 {
		return c[0]
	}
	var out []byte
	for _, p := range c {
		out = append(out, p...)
	}
	return out
}

// spreads holds the value of each resource decoded in pieces, whose Any has no Value; release
// forgets them.
var spreads sync.Map // *anypb.Any → chunks

// valueOf is a resource's value, in pieces or not.
func valueOf(a *anypb.Any) chunks {
	if a.Value != nil {
		return chunks{a.Value}
	}
	if c, ok := spreads.Load(a); ok {
		return c.(chunks)
	}
	return nil
}

// chunkReader reads n bytes of pieces from off in pieces[0] on. A copy of a reader is an
// independent reader of the same bytes; nothing is copied from the pieces unless asked.
type chunkReader struct {
	pieces [][]byte
	off    int
	n      int
}

func newChunkReader(c chunks) chunkReader {
	n := 0
	for _, p := range c {
		n += len(p)
	}
	return chunkReader{pieces: c, n: n}
}

// settle moves past exhausted pieces.
func (r *chunkReader) settle() {
	for len(r.pieces) > 0 && r.off == len(r.pieces[0]) {
		r.pieces, r.off = r.pieces[1:], 0
	}
}

func (r *chunkReader) varint() (uint64, bool) {
	r.settle()
	if r.n == 0 || len(r.pieces) == 0 {
		return 0, false
	}
	p := r.pieces[0][r.off:]
	// Tags and lengths are one to three bytes: read those inline, as most are read only to
	// be skipped.
	switch {
	case len(p) > 0 && r.n > 0 && p[0] < 0x80:
		r.off, r.n = r.off+1, r.n-1
		return uint64(p[0]), true
	case len(p) > 1 && r.n > 1 && p[1] < 0x80:
		r.off, r.n = r.off+2, r.n-2
		return uint64(p[0]&0x7f) | uint64(p[1])<<7, true
	case len(p) > 2 && r.n > 2 && p[2] < 0x80:
		r.off, r.n = r.off+3, r.n-3
		return uint64(p[0]&0x7f) | uint64(p[1]&0x7f)<<7 | uint64(p[2])<<14, true
	}
	if len(p) >= protowire.SizeVarint(1<<63) || len(p) >= r.n {
		v, k := protowire.ConsumeVarint(p[:min(len(p), r.n)])
		if k < 0 {
			return 0, false
		}
		r.off, r.n = r.off+k, r.n-k
		return v, true
	}
	var buf [10]byte // a varint across two pieces
	k := 0
	for k < len(buf) && r.n > 0 {
		r.settle()
		buf[k] = r.pieces[0][r.off]
		r.off, r.n = r.off+1, r.n-1
		k++
		if buf[k-1] < 0x80 {
			break
		}
	}
	v, used := protowire.ConsumeVarint(buf[:k])
	return v, used == k
}

// skip moves n bytes on.
func (r *chunkReader) skip(n int) bool {
	if n > r.n {
		return false
	}
	r.n -= n
	for n > 0 {
		r.settle()
		step := min(n, len(r.pieces[0])-r.off)
		r.off += step
		n -= step
	}
	return true
}

// sub is a reader of the next n bytes; r itself does not move.
func (r *chunkReader) sub(n int) (chunkReader, bool) {
	if n > r.n {
		return chunkReader{}, false
	}
	s := *r
	s.n = n
	return s, true
}

// take returns the next n bytes in pieces, and moves past them.
func (r *chunkReader) take(n int) (chunks, bool) {
	if n > r.n {
		return nil, false
	}
	var out chunks
	r.n -= n
	for n > 0 {
		r.settle()
		step := min(n, len(r.pieces[0])-r.off)
		out = append(out, r.pieces[0][r.off:r.off+step])
		r.off += step
		n -= step
	}
	return out, true
}

// equal reports whether the next len(s) bytes are s, and moves past them.
func (r *chunkReader) equal(s string) bool {
	if len(s) > r.n {
		return false
	}
	r.n -= len(s)
	for len(s) > 0 {
		r.settle()
		step := min(len(s), len(r.pieces[0])-r.off)
		if string(r.pieces[0][r.off:r.off+step]) != s[:step] {
			return false
		}
		r.off += step
		s = s[step:]
	}
	return true
}

// field reads a length-delimited field's number and length; ok is false at the end, on bad
// bytes, or for a field of another wire type (then skip it with skipValue).
func (r *chunkReader) field() (num protowire.Number, typ protowire.Type, length int, ok bool) {
	tag, ok := r.varint()
	if !ok {
		return 0, 0, 0, false
	}
	num, typ = protowire.DecodeTag(tag)
	if typ != protowire.BytesType {
		return num, typ, 0, true
	}
	l, ok := r.varint()
	if !ok || l > uint64(r.n) {
		return 0, 0, 0, false
	}
	return num, typ, int(l), true
}

// skipValue skips a field value of a wire type other than length-delimited.
func (r *chunkReader) skipValue(typ protowire.Type) bool {
	switch typ {
	case protowire.VarintType:
		_, ok := r.varint()
		return ok
	case protowire.Fixed32Type:
		return r.skip(4)
	case protowire.Fixed64Type:
		return r.skip(8)
	}
	return false // groups: no xDS message has them
}

// decodeRoutesInPieces decodes a state-of-the-world response of route configurations whose
// bytes are the pieces c, leaving each resource's value in them (spreads). It fails, having
// registered nothing, for any other type or a field decodeSotw would not handle either.
func decodeRoutesInPieces(c chunks, m *discoveryv3.DiscoveryResponse) error {
	r := newChunkReader(c)
	var pending map[*anypb.Any]chunks
	for r.n > 0 {
		num, typ, length, ok := r.field()
		if !ok || typ != protowire.BytesType {
			return errUnhandled
		}
		switch num {
		case 1, 4, 5:
			v, _ := r.take(length)
			s := string(v.bytes())
			switch num {
			case 1:
				m.VersionInfo = s
			case 4:
				if s != resourcev3.RouteType {
					return errUnhandled
				}
				m.TypeUrl = resourcev3.RouteType
			case 5:
				m.Nonce = s
			}
		case 2:
			a, value, err := decodeAnyInPieces(&r, length)
			if err != nil {
				return err
			}
			if len(value) > 1 {
				if pending == nil {
					pending = map[*anypb.Any]chunks{}
				}
				pending[a] = value
			} else if len(value) == 1 {
				a.Value = value[0]
			}
			m.Resources = append(m.Resources, a)
		default:
			return errUnhandled
		}
	}
	for a, v := range pending {
		spreads.Store(a, v)
	}
	return nil
}

// decodeAnyInPieces decodes the Any of length bytes at r, which must hold a route
// configuration, and moves r past it.
func decodeAnyInPieces(r *chunkReader, length int) (*anypb.Any, chunks, error) {
	s, _ := r.sub(length)
	r.skip(length)
	a := &anypb.Any{}
	var value chunks
	for s.n > 0 {
		num, typ, l, ok := s.field()
		if !ok || typ != protowire.BytesType {
			return nil, nil, errUnhandled
		}
		switch num {
		case 1:
			if l != len(resourcev3.RouteType) || !s.equal(resourcev3.RouteType) {
				return nil, nil, errUnhandled
			}
			a.TypeUrl = resourcev3.RouteType
		case 2:
			value, _ = s.take(l)
		default:
			return nil, nil, errUnhandled
		}
	}
	return a, value, nil
}

// virtualHostBytes finds the virtual host named name in an encoded RouteConfiguration by
// following the fields' length prefixes, decoding nothing else: one service's virtual host
// is a kilobyte in a megabyte of routes. nil when there is none or the bytes are not a
// RouteConfiguration.
func virtualHostBytes(rc chunks, name string) []byte {
	const virtualHosts, virtualHostName = 2, 1 // RouteConfiguration.virtual_hosts, VirtualHost.name
	r := newChunkReader(rc)
	for r.n > 0 {
		r.settle()
		if p := r.pieces[0][r.off:]; len(name) < 0x80 && len(p) > 32+len(name) && r.n > 32+len(name) {
			// Within one piece, as all but a few are: read the virtual host's head in place.
			if length, k := protowire.ConsumeVarint(p[1:]); p[0] == virtualHosts<<3|byte(protowire.BytesType) && k > 0 {
				head := p[1+k:]
				if head[0] == virtualHostName<<3|byte(protowire.BytesType) && int(head[1]) == len(name) && string(head[2:2+len(name)]) == name {
					r.skip(1 + k)
					whole, ok := r.take(int(length))
					if !ok {
						return nil
					}
					return whole.bytes()
				}
				if !r.skip(1 + k + int(length)) {
					return nil
				}
				continue
			}
		}
		num, typ, length, ok := r.field()
		switch {
		case !ok:
			return nil
		case typ != protowire.BytesType:
			if !r.skipValue(typ) {
				return nil
			}
			continue
		}
		if num == virtualHosts {
			vh, _ := r.sub(length)
			if n, t, l, ok := vh.field(); ok && n == virtualHostName && t == protowire.BytesType && l == len(name) && vh.equal(name) {
				whole, _ := r.take(length)
				return whole.bytes()
			}
		}
		r.skip(length)
	}
	return nil
}

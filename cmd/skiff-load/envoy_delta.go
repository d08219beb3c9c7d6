package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// runDelta is the same conversation as runSotW over incremental xDS: wildcard CDS and LDS,
// then EDS and RDS subscriptions that follow what the held clusters and listeners reference.
// Each response is acknowledged by nonce; subscription changes go in their own request
// carrying only what was added and removed.
func (p *simProxy) runDelta(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("opening delta ADS stream: %w", err)
	}
	if p.opened.IsZero() {
		p.opened = time.Now()
	}
	for t := range p.types {
		p.types[t].present = map[string][]string{}
	}
	nodeSent := false
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if !nodeSent {
			req.Node, nodeSent = p.node, true
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("sending delta %s request: %w", typeNames[typeIndex(req.GetTypeUrl())], err)
		}
		return nil
	}
	// subscribe moves typ's subscription to names (sorted), sending only the difference.
	subscribe := func(typ int, names []string) error {
		st := &p.types[typ]
		add, remove := diff(st.names, names)
		first := !st.requested
		st.requested, st.names = true, names
		// An empty first request is a wildcard subscription, which EDS and RDS must never be.
		if len(add) == 0 && len(remove) == 0 && (!first || typ == tEDS || typ == tRDS) {
			return nil
		}
		return send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURLs[typ], ResourceNamesSubscribe: add, ResourceNamesUnsubscribe: remove})
	}
	if err := subscribe(tCDS, nil); err != nil { // no names on the first request: wildcard
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return recvError(err)
		}
		recv := time.Now()
		p.received = true
		typ := typeIndex(resp.GetTypeUrl())
		p.fleet.count(typ, responseSize(resp))
		st := &p.types[typ]
		st.nonce = resp.GetNonce()
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if typ == tRDS && p.nack && !p.nacked {
			p.nacked = true
			p.fleet.nacks.Add(1)
			ack.ErrorDetail = nackDetail()
			if err := send(ack); err != nil {
				return err
			}
			st.content = st.content || len(resp.GetResources()) > 0
			p.checkSynced()
			release(resp)
			continue
		}
		if err := send(ack); err != nil {
			return err
		}
		anys := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			anys = append(anys, r.GetResource())
			var refs []string
			switch typ {
			case tCDS:
				refs = clusterNames.get(r.GetResource()).refs
			case tLDS:
				refs = listenerNames.get(r.GetResource()).refs
			}
			st.present[r.GetName()] = refs
		}
		for _, n := range resp.GetRemovedResources() {
			delete(st.present, n)
		}
		st.content = st.content || len(st.present) > 0
		switch typ {
		case tCDS:
			names := presentRefs(st.present)
			if err := subscribe(tEDS, names); err != nil {
				return err
			}
			if len(names) == 0 && !p.types[tLDS].requested {
				err = subscribe(tLDS, nil)
			}
		case tEDS:
			if !p.types[tLDS].requested {
				err = subscribe(tLDS, nil)
			}
		case tLDS:
			err = subscribe(tRDS, presentRefs(st.present))
		}
		if err != nil {
			return err
		}
		p.checkSynced()
		p.fleet.observe(p.idx, typ, recv, anys)
		release(resp)
	}
}

// presentRefs is the sorted union of what the held resources reference.
func presentRefs(present map[string][]string) []string {
	var names []string
	for _, refs := range present {
		names = append(names, refs...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// diff says what to subscribe to and unsubscribe from to move from old to new.
func diff(old, new []string) (add, remove []string) {
	o := map[string]bool{}
	for _, n := range old {
		o[n] = true
	}
	for _, n := range new {
		if !o[n] {
			add = append(add, n)
		}
		delete(o, n)
	}
	return add, slices.Sorted(maps.Keys(o))
}

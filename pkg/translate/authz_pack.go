package translate

import (
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Packing RBAC filter configurations. They hold one policy per AuthorizationPolicy rule in a
// map, which MustAny must pack in key order (see there), and protobuf-go's deterministic map
// encoding goes through reflection for every entry: with a hundred policies that was half the
// cost of a workload's listeners. So the policies map is encoded here, entry by entry, to the
// very bytes MustAny produces (authz_pack_test.go checks that), and a policy that the HTTP
// and the network filter share (rulePolicies) is encoded once.

// rbacPacker packs the RBAC filters of one listener translation. It only remembers encoded
// policies, which are never modified.
type rbacPacker struct {
	encoded map[*rbacv3.Policy][]byte
	scratch []byte
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// pack is MustAny(filter) for an RBAC filter configuration (HTTP or network) whose rules field
// is left unset in filter and given as rules. Both RBAC filters have rules as field 1, the
// lowest, which protobuf-go encodes first; the rest of filter follows as protobuf-go encodes it.
func (p *rbacPacker) pack(filter proto.Message, rules *rbacv3.RBAC) *anypb.Any {
	encodedRules := p.appendRules(nil, rules)
	rest, err := deterministic.Marshal(filter)
	if err != nil {
		panic("translate: packing " + string(proto.MessageName(filter)) + ": " + err.Error())
	}
	const rulesField = 1
	b := make([]byte, 0, protowire.SizeTag(rulesField)+protowire.SizeBytes(len(encodedRules))+len(rest))
	b = protowire.AppendTag(b, rulesField, protowire.BytesType)
	b = protowire.AppendBytes(b, encodedRules)
	b = append(b, rest...)
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(proto.MessageName(filter)), Value: b}
}

// appendRules encodes rules as deterministic marshalling does: action (field 1), then the
// policies (field 2) as map entries sorted by name, each with its key and value, then the
// remaining fields, all numbered above 2.
func (p *rbacPacker) appendRules(b []byte, rules *rbacv3.RBAC) []byte {
	const actionField, policiesField, keyField, valueField = 1, 2, 1, 2
	if rules.Action != 0 {
		b = protowire.AppendTag(b, actionField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(rules.Action))
	}
	for _, name := range sortedKeys(rules.Policies) {
		policy := rules.Policies[name]
		value, seen := p.encoded[policy]
		if !seen {
			var err error
			if p.scratch, err = deterministic.MarshalAppend(p.scratch[:0], policy); err != nil {
				panic("translate: packing RBAC policy " + name + ": " + err.Error())
			}
			value = p.scratch
		}
		b = protowire.AppendTag(b, policiesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(keyField)+protowire.SizeBytes(len(name))+
			protowire.SizeTag(valueField)+protowire.SizeBytes(len(value))))
		b = protowire.AppendTag(b, keyField, protowire.BytesType)
		b = protowire.AppendString(b, name)
		b = protowire.AppendTag(b, valueField, protowire.BytesType)
		b = protowire.AppendBytes(b, value)
		if !seen {
			if p.encoded == nil {
				p.encoded = map[*rbacv3.Policy][]byte{}
			}
			// The bytes just appended: b may move when it grows, but what is written stays.
			p.encoded[policy] = b[len(b)-len(value):]
		}
	}
	rest, err := deterministic.MarshalAppend(b, &rbacv3.RBAC{AuditLoggingOptions: rules.AuditLoggingOptions})
	if err != nil {
		panic("translate: packing RBAC: " + err.Error())
	}
	return rest
}

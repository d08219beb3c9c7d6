package telemetry

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
)

// accesslogv3Identifier is a stream's first message's identifier, written briefly.
type accesslogv3Identifier struct{ node, logName string }

func (i accesslogv3Identifier) proto() *accesslogv3.StreamAccessLogsMessage_Identifier {
	return &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: i.node}, LogName: i.logName}
}

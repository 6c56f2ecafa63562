#pragma once
// The gateway's sinks implement the uplink's Sink (uplink/sink.hpp: the interface, its result
// and error codes), and keep their marks with uplink/marks.hpp, which an agent relaying for
// its devices uses too. These are the gateway's names for them.

#include "uplink/marks.hpp"
#include "uplink/sink.hpp"

namespace outpost::gateway {

using uplink::decide_mark;
using uplink::describe_sink_error;
using uplink::MarkBook;
using uplink::MarkDecision;
using uplink::Sink;
using uplink::sink_errc;
using uplink::sink_errc_from_errno;
using uplink::sink_error_name;
using uplink::SinkBatch;
using uplink::SinkCallback;
using uplink::SinkResult;
using uplink::write_above_mark;

}  // namespace outpost::gateway

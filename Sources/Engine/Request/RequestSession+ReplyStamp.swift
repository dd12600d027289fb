// RequestSession+ReplyStamp: the identity of this session's replays (a cache hit, a stale entry,
// a follower's copy of a flight's answer): vLLM's id form for this request's X-Request-Id and the
// wall clock now (ReplyStamp). Apart from RequestSession.swift so the driver's file stays about
// events and actions; reads only its request and request id.
import Reactor

extension RequestSession {
    /// A stamp for a reply written now.
    var replyStamp: ReplyStamp {
        ReplyStamp(kind: request.kind, requestId: requestId, created: Int(Loop.wallSeconds()))
    }
}

// SimServer+Generation: the life of a generation request (completions, chat, responses). Validate → (maybe inject a 500) →
// submit to the KVScheduler → start when admitted → produce tokens on Timers (or at once when the
// pacing is zero) → answer → free the slot and admit waiters. A client that leaves aborts its
// Generation within the same callback: timer cancelled, blocks freed, counted in `aborted`.
//
// Re-entrancy: answering a request can make HTTPServerConnection parse a pipelined request and
// call back into `generate` before the answer call returns. So each finish does its bookkeeping
// before it writes, and admitWaiting() is guarded so nested finishes never recurse into it.

import Reactor

extension SimServer {
    func generate(_ c: HTTPServerConnection, _ head: HTTPRequestHead, _ body: [UInt8], kind: GenerationKind) {
        stats.requestsTotal += 1
        switch kind {
        case .chat: stats.chatRequests += 1
        case .completion: stats.completionRequests += 1
        case .responses: stats.responsesRequests += 1
        }
        stats.lastRequestHeaders = head.headers
        stats.lastRequestBody = body
        let parsed: Result<(GenerationRequest, ResponsesEcho?), APIError>
        let contentType = head.headers["content-type"]
        if kind == .responses {
            parsed = ResponsesRequest.parse(body: body, contentType: contentType, catalog: catalog,
                                            maxModelLen: settings.maxModelLen).map { ($0.generation, $0.echo) }
        } else {
            parsed = GenerationRequest.parse(kind: kind, body: body, contentType: contentType, catalog: catalog,
                                             maxModelLen: settings.maxModelLen, echo: knobs.echo).map { ($0, nil) }
        }
        let request: GenerationRequest
        let echo: ResponsesEcho?
        switch parsed {
        case .failure(let e):
            respond(c, e)
            return
        case .success(let r):
            (request, echo) = r
        }
        if request.isStream { stats.streamRequests += 1 }
        if injectsFailure(c) { return }

        let now = Loop.nowNanos()
        nextGenerationID += 1
        let g = Generation(
            id: GenerationID(raw: nextGenerationID), request: request,
            textSeed: request.isRandomText ? rng.next() : request.textSeed, settings: settings,
            responseID: responseID(kind: kind, head: head), model: catalog.escapedNames[request.modelIndex],
            created: Int(Loop.wallSeconds()), now: now, pacing: Pacing(knobs),
            responsesEcho: echo, itemID: echo == nil ? [] : Array("msg_".utf8) + rng.hex16())
        if prefixCache != nil {
            g.promptIDs = request.promptIDs
            g.promptBlocks = PrefixCache.blockHashes(request.promptIDs, blockSize: settings.blockSize,
                                                     seed: UInt64(request.modelIndex))
        }
        g.connection = c
        c.context = g
        active[g.id] = g
        // Like vLLM (Starlette's StreamingResponse), a stream's head goes out before the request
        // is even scheduled; its events follow once it runs. A responses stream opens with
        // response.created and response.in_progress at once, before any token.
        if g.isStream {
            c.writeChunkedHead(status: 200, headers: headers.sse)
            if kind == .responses {
                writeResponsesEvent(g, .created, c)
                writeResponsesEvent(g, .inProgress, c)
            }
        }
        if scheduler.submitted(g.id, blocks: g.reservedBlocks) == .started {
            start(g, now: now)
        }
    }

    /// --error-rate (generations and pooling requests alike): answer this valid request with
    /// vLLM's engine-failure 500 instead.
    func injectsFailure(_ c: HTTPServerConnection) -> Bool {
        guard knobs.errorRate > 0 && rng.nextUnit() < knobs.errorRate else { return false }
        stats.errorsInjected += 1
        metrics.finished[FinishedReason.error.rawValue] += 1
        respond(c, .injectedFailure)
        return true
    }

    /// `X-Request-Id: abc` → "chatcmpl-abc"; otherwise 16 random hex digits. /v1/responses
    /// ignores the header ("resp_" and random digits, as captured).
    private func responseID(kind: GenerationKind, head: HTTPRequestHead) -> [UInt8] {
        switch kind {
        case .chat: return requestID("chatcmpl-", head)
        case .completion: return requestID("cmpl-", head)
        case .responses:
            var w = ByteWriter(capacity: 24)
            w.write("resp_")
            w.write(rng.hex16())
            return w.bytes
        }
    }

    /// `prefix` + the request's `X-Request-Id` (JSON-escaped), or 16 random hex digits.
    func requestID(_ prefix: StaticString, _ head: HTTPRequestHead) -> [UInt8] {
        var w = ByteWriter(capacity: 48)
        w.write(prefix)
        if let rid = head.headers["x-request-id"], !rid.isEmpty {
            var rid = rid
            rid.withUTF8 { w.write(jsonEscaped: UnsafeRawBufferPointer($0)) }
        } else {
            w.write(rng.hex16())
        }
        return w.bytes
    }

    /// The scheduler admitted `g`: take the pacing now in force and produce its first token.
    func start(_ g: Generation, now: UInt64) {
        g.phase = .running
        g.startedNanos = now
        g.pacing = Pacing(knobs)
        stats.maxRunningSeen = max(stats.maxRunningSeen, scheduler.runningCount)
        metrics.queueTime.observe(seconds(now &- g.arrivedNanos))
        metrics.promptTokens += g.usagePromptTokens
        // Prefix cache: the cached leading blocks skip prefill; the rest waits its turn in line.
        var cached = 0
        if prefixCache != nil {
            let ins = prefixCache!.lookupAndInsert(g.promptBlocks)
            kvEvents?.publish(ins, hashes: g.promptBlocks, ids: g.promptIDs, blockSize: settings.blockSize)
            cached = PrefixCache.cachedTokens(matchedBlocks: ins.matched, blockSize: settings.blockSize,
                                              promptTokens: g.usagePromptTokens)
            metrics.prefixQueries += g.usagePromptTokens
            metrics.prefixHits += cached
        }
        g.pacing.ttftNanos += prefill.scheduled(now: now, uncachedTokens: g.usagePromptTokens - cached)
        if g.isStream {
            if g.pacing.ttftNanos == 0 { produce(g) } else { arm(g, afterNanos: g.pacing.ttftNanos) }
        } else {
            let total = g.pacing.ttftNanos + UInt64(g.steps - 1) * g.pacing.itlNanos
            if total == 0 { complete(g, now: now) } else { arm(g, afterNanos: total) }
        }
    }

    private func arm(_ g: Generation, afterNanos nanos: UInt64) {
        let t: Timer
        if let existing = g.timer {
            t = existing
        } else {
            t = Timer(loop: loop)
            t.onFire = { [unowned self, unowned g] in self.timerFired(g) }
            g.timer = t
        }
        t.schedule(after: .nanoseconds(Int64(nanos)))
    }

    private func timerFired(_ g: Generation) {
        switch g.phase {
        case .running:
            if g.isStream { produce(g) } else { complete(g, now: Loop.nowNanos()) }
        case .closing:
            closeWhenFlushed(g)
        case .waiting, .stalled, .blockedOnWrite, .finished:
            break  // stale firing
        }
    }

    /// Streams: one step (one token per unfinished choice) per call, or all remaining steps when
    /// the inter-token latency is zero. Each event is its own HTTP chunk, as vLLM sends them.
    func produce(_ g: Generation) {
        guard let c = g.connection else { return }
        let now = Loop.nowNanos()
        let choices = g.tokensPerChoice.count
        while true {
            let step = g.emittedSteps + 1
            if step == 1 {
                g.firstTokenNanos = now
                metrics.timeToFirstToken.observe(seconds(now &- g.startedNanos))
                if g.kind == .chat {
                    for i in 0..<choices {
                        scratch.reset()
                        g.renderRoleEvent(choice: i, into: &scratch)
                        writeScratchChunk(c)
                    }
                } else if g.kind == .responses {
                    writeResponsesEvent(g, .itemAdded, c)
                    writeResponsesEvent(g, .partAdded, c)
                }
            } else {
                metrics.interTokenLatency.observe(seconds(now &- g.lastTokenNanos))
            }
            g.lastTokenNanos = now
            if g.kind == .responses {
                writeResponsesEvent(g, .delta(step: step), c)
            } else {
                for i in 0..<choices where step <= g.tokensPerChoice[i] {
                    scratch.reset()
                    g.renderTokenEvent(choice: i, step: step, into: &scratch)
                    writeScratchChunk(c)
                }
            }
            g.emittedSteps = step
            // A write can fail and close the connection (a peer that reset): that aborted `g`.
            if g.phase == .finished { return }
            if step == g.steps {
                finishStream(g, c, now: now)
                return
            }
            if g.pacing.disconnectAfter > 0 && step >= g.pacing.disconnectAfter {
                g.phase = .closing
                closeWhenFlushed(g)
                return
            }
            if g.pacing.stallAfter > 0 && step >= g.pacing.stallAfter {
                g.phase = .stalled
                return
            }
            if g.pacing.itlNanos > 0 {
                if c.isWriteBlocked {
                    g.phase = .blockedOnWrite
                } else {
                    arm(g, afterNanos: g.pacing.itlNanos)
                }
                return
            }
        }
    }

    private func writeScratchChunk(_ c: HTTPServerConnection) {
        scratch.bytes.withUnsafeBytes { c.writeChunk($0) }
    }

    /// Each event its own chunk, as vLLM sends them.
    private func writeResponsesEvent(_ g: Generation, _ e: ResponsesStreamEvent, _ c: HTTPServerConnection) {
        scratch.reset()
        g.renderResponsesEvent(e, into: &scratch)
        writeScratchChunk(c)
    }

    /// --disconnect-after-tokens: close without the terminating chunk, but only once what was
    /// written has left (closing the bufferevent drops unsent output). The close comes back as
    /// connectionDidClose → abort.
    private func closeWhenFlushed(_ g: Generation) {
        guard let c = g.connection else { return }
        if c.pendingOutputBytes == 0 {
            c.close()
        } else {
            arm(g, afterNanos: 1_000_000)
        }
    }

    private func finishStream(_ g: Generation, _ c: HTTPServerConnection, now: UInt64) {
        retire(g, now: now)
        if g.kind == .responses {
            // No `[DONE]`: response.completed ends it (even when the status is "incomplete").
            for e in [ResponsesStreamEvent.textDone, .partDone, .itemDone, .completed] { writeResponsesEvent(g, e, c) }
            c.endChunked()
            admitWaiting()
            return
        }
        if g.includeUsage {
            scratch.reset()
            g.renderUsageEvent(into: &scratch)
            writeScratchChunk(c)
        }
        scratch.reset()
        scratch.write(doneEvent)
        writeScratchChunk(c)
        c.endChunked()
        admitWaiting()
    }

    /// Plain answers: the whole body once the last token is due.
    private func complete(_ g: Generation, now: UInt64) {
        guard let c = g.connection else { return }
        // Plain answers produce no events to time, so record what the pacing implied.
        metrics.timeToFirstToken.observe(seconds(g.pacing.ttftNanos))
        metrics.interTokenLatency.observe(seconds(g.pacing.itlNanos), times: g.steps - 1)
        retire(g, now: now)
        scratch.reset()
        if g.kind == .responses { g.renderResponsesAnswer(into: &scratch) } else { g.renderResponse(into: &scratch) }
        headers.refresh()
        c.writeResponse(status: 200, headers: headers.json, body: scratch.bytes)
        admitWaiting()
    }

    /// Bookkeeping for a request that ran to the end; done before its last bytes are written.
    private func retire(_ g: Generation, now: UInt64) {
        g.phase = .finished
        scheduler.finished(g.id)
        active.removeValue(forKey: g.id)
        metrics.generationTokens += g.completionTokens
        metrics.finished[g.finishedReason.rawValue] += 1
        metrics.e2eLatency.observe(seconds(now &- g.arrivedNanos))
        metrics.requestPromptTokens.observe(Double(g.usagePromptTokens))
        metrics.requestGenerationTokens.observe(Double(g.completionTokens))
        metrics.requestParamsMaxTokens.observe(Double(g.maxTokensParam))
        release(g)
    }

    /// The client went away (or --disconnect-after-tokens closed it). vLLM does not count aborts
    /// in request_success_total, so neither do we.
    func abort(_ g: Generation) {
        let now = Loop.nowNanos()
        switch g.phase {
        case .finished:
            return
        case .waiting:
            scheduler.abandoned(g.id)
        case .running, .stalled, .blockedOnWrite, .closing:
            scheduler.finished(g.id)
            metrics.generationTokens += g.completionTokens(afterSteps: g.producedSteps(now: now))
        }
        g.phase = .finished
        active.removeValue(forKey: g.id)
        stats.aborted += 1
        release(g)
        admitWaiting()
    }

    /// Breaks the connection ↔ generation cycle. A Generation with a timer may be inside that
    /// timer's callback right now, so it is parked in the graveyard instead of freed (style E.3).
    private func release(_ g: Generation) {
        if let t = g.timer {
            t.cancel()
            loop.bury(g)
        }
        if let c = g.connection, c.context === g { c.context = nil }
        g.connection = nil
    }

    /// Starts waiters, in FIFO order, while they fit.
    func admitWaiting() {
        guard !isAdmitting else { return }
        isAdmitting = true
        defer { isAdmitting = false }
        while let id = scheduler.nextAdmission() {
            guard let g = active[id] else { preconditionFailure("admitted \(id) is not active") }
            start(g, now: Loop.nowNanos())
        }
    }
}

@inline(__always)
func seconds(_ nanos: UInt64) -> Double { Double(nanos) / 1e9 }

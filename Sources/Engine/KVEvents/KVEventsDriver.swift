// KVEventsDriver: subscribes to each backend's vLLM KV-event publisher (ZeroMQ SUB, one per
// backend with a URL) on this process's libevent loop, decodes every batch (KVEventDecoder) and
// feeds the KVBlockIndex that exact-mode routing asks. Every worker process runs its own, so all
// reach the same index. No threads of ours (libzmq keeps one I/O thread per context).
// Owns: the ZeroMQ context, the subscribers (each: socket, libevent event, receive buffer), the
// decoder and the index; all freed in stop(). Loop-confined.
import CEventShim
import CKVEvents
import Reactor

public final class KVEventsDriver {
    /// What the index knows; the router's scorer calls `index.overlap(tokenIDs:)`.
    public private(set) var index: KVBlockIndex<BackendID>
    private let loop: Loop
    private var context: UnsafeMutableRawPointer?
    private var subscribers: [KVEventSubscriber] = []
    private let decoder = KVEventDecoder()

    // Counters (engine_kv_events_*).
    public private(set) var batchesApplied = 0
    public private(set) var eventsApplied = 0
    public private(set) var dropped: [KVDecodeError: Int] = [:]
    public private(set) var gapPurges: [BackendID: Int] = [:]
    public private(set) var receiveErrors = 0

    /// Messages handled per subscriber per wakeup before yielding to the rest of the loop.
    static let maxMessagesPerWakeup = 64
    /// Larger messages are refused by libzmq (a batch of 13 blocks of 128 tokens is ~4 KiB).
    static let maxMessageBytes: Int64 = 16 << 20

    /// Whether libzmq.so.5 can be loaded (it is loaded on first use, not linked).
    public static var libraryAvailable: Bool { ckv_zmq_available() == 1 }

    /// `publishers`: backend → its `kv_events_url` (tcp://host:port of vLLM's PUB endpoint).
    public init(loop: Loop, publishers: [(BackendID, String)], maxBlocksPerBackend: Int = 1 << 17) {
        self.loop = loop
        self.index = KVBlockIndex(maxBlocksPerBackend: maxBlocksPerBackend)
        self.context = publishers.isEmpty ? nil : ckv_context_new()
        self.publishersToOpen = publishers
    }

    private var publishersToOpen: [(BackendID, String)]

    /// Connects the subscribers (ZeroMQ connects in the background and reconnects by itself);
    /// returns the URLs that could not be opened (a malformed endpoint, or every one when libzmq
    /// cannot be loaded: `libraryAvailable`).
    @discardableResult
    public func start() -> [String] {
        var failed: [String] = []
        guard let ctx = context else { return publishersToOpen.map(\.1) }
        for (id, url) in publishersToOpen {
            if let s = KVEventSubscriber(loop: loop, context: ctx, backend: id, url: url, owner: self) {
                subscribers.append(s)
            } else {
                failed.append(url)
            }
        }
        publishersToOpen = []
        return failed
    }

    public func stop() {
        for s in subscribers { s.close() }
        subscribers = []
        decoder.close()
        if let c = context { ckv_context_free(c) }
        context = nil
    }

    // TODO(kvevents): watch ZMQ_EVENT_DISCONNECTED (zmq_socket_monitor) and purge at once: a
    // restarted publisher is detected only when its numbering does not continue ours (or when
    // the health check fails), and a restart whose first batch we receive happens to carry our
    // next number would pass unnoticed. Replay (vLLM's ROUTER) could also fill real gaps.

    /// The backend's publisher is known to be gone (its health check failed): its blocks are.
    public func purge(_ backend: BackendID) {
        index.purge(backend)
    }

    /// A subscriber received one message.
    fileprivate func received(_ m: UnsafePointer<ckv_message>, from backend: BackendID) {
        switch decoder.decode(message: m) {
        case .failure(let e):
            dropped[e, default: 0] += 1
        case .success(let batch):
            batchReceived(batch, from: backend)
        }
    }

    /// One decoded batch from `backend` (also the tests' way in, without sockets).
    func batchReceived(_ batch: KVEventBatch, from backend: BackendID) {
        batchesApplied += 1
        eventsApplied += batch.events.count
        if case .purgedAfterGap = index.batchReceived(batch, from: backend) {
            gapPurges[backend, default: 0] += 1
        }
    }

    fileprivate func receiveFailed() { receiveErrors += 1 }
}

/// One SUB socket on the loop. ZMQ_FD is edge-triggered and only means "look at ZMQ_EVENTS":
/// after every wakeup we receive while ZMQ_EVENTS says POLLIN, and re-check after each receive
/// (a receive can consume the notification of the next message). When the per-wakeup bound
/// stops us with messages left, the fd will not fire again for them, so we come back through
/// Loop.runSoon instead.
/// Memory (style E): the socket, the event and the buffer are ours, freed in close(); the event's
/// argument is passUnretained(self), safe because close() frees the event first.
final class KVEventSubscriber: LoopDeferred {
    let backend: BackendID
    let url: String
    private let loop: Loop
    private unowned let owner: KVEventsDriver
    private var socket: UnsafeMutableRawPointer?
    private var event: OpaquePointer?
    private let message: UnsafeMutablePointer<ckv_message>
    private var isDrainScheduled = false

    init?(loop: Loop, context: UnsafeMutableRawPointer, backend: BackendID, url: String, owner: KVEventsDriver) {
        guard let s = ckv_sub_open(context, url, KVEventsDriver.maxMessageBytes) else { return nil }
        let fd = ckv_socket_fd(s)
        guard fd >= 0, let m = ckv_message_new() else {
            ckv_socket_close(s)
            return nil
        }
        self.loop = loop
        self.backend = backend
        self.url = url
        self.owner = owner
        self.socket = s
        self.message = m
        event = event_new(loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, arg in
            Unmanaged<KVEventSubscriber>.fromOpaque(arg!).takeUnretainedValue().drain()
        }, Unmanaged.passUnretained(self).toOpaque())
        event_add(event, nil)
        // Messages may be waiting already, and the edge that announced them is gone.
        scheduleDrain()
    }

    deinit { assert(socket == nil, "KVEventSubscriber dropped without close()") }

    func runDeferred() {
        isDrainScheduled = false
        drain()
    }

    private func scheduleDrain() {
        guard !isDrainScheduled else { return }
        isDrainScheduled = true
        loop.runSoon(self)
    }

    private func drain() {
        guard let s = socket else { return }
        var handled = 0
        while ckv_socket_readable(s) != 0 {
            if handled == KVEventsDriver.maxMessagesPerWakeup {
                scheduleDrain()
                return
            }
            let rc = ckv_recv(s, message)
            if rc <= 0 {
                if rc < 0 { owner.receiveFailed() }
                return
            }
            handled += 1
            owner.received(message, from: backend)
        }
    }

    func close() {
        guard socket != nil else { return }
        if let e = event { event_free(e) }
        event = nil
        if let s = socket { ckv_socket_close(s) }
        socket = nil
        ckv_message_free(message)
    }
}

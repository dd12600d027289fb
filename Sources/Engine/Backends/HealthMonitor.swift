// HealthMonitor: every vllm.health_check_interval_seconds, asks each backend GET /health and,
// when its models are not configured, GET /v1/models. Drives Backend.isHealthy and the model
// lists behind GET /v1/models, and says when the first round has ended (`isSettled`: a worker
// listens only then). Control plane only; owns one Timer.
import CEventShim
import Reactor

final class HealthMonitor {
    private let loop: Loop
    private let backends: BackendSet
    private let interval: Duration
    private let timer: Timer
    var onChange: ((Backend) -> Void)?
    var onBreakerOpened: ((Backend) -> Void)?
    /// A backend's model list was read (after every successful GET /v1/models).
    var onModelsDiscovered: ((Backend) -> Void)?
    /// Backends whose first check has not ended yet: its GET /health, and then, when it is up
    /// without configured models, its first GET /v1/models (answered or not).
    private var unsettled: Set<BackendID> = []
    /// Every backend's first check has ended: what each serves is known, or cannot be yet.
    var isSettled: Bool { unsettled.isEmpty }

    init(loop: Loop, backends: BackendSet, interval: Duration) {
        self.loop = loop
        self.backends = backends
        self.interval = interval
        self.timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.checkAll() }
    }

    func start() {
        unsettled = Set(backends.all.map(\.id))
        checkAll()
    }

    func stop() { timer.close() }

    private func checkAll() {
        for b in backends.all { check(b) }
        timer.schedule(after: interval)
    }

    private func headers(_ b: Backend) -> HTTPHeaders {
        var h = HTTPHeaders()
        if let k = b.apiKey { h.add("authorization", "Bearer " + k) }
        return h
    }

    func check(_ b: Backend) {
        UpstreamFetch(loop: loop, pool: b.pool, path: "/health", headers: headers(b), timeout: .seconds(2)) { [weak self] status, _ in
            guard let self else { return }
            let up = status == 200
            let changed = up != b.isHealthy || b.lastCheckedNanos == 0
            b.isHealthy = up
            b.lastCheckedNanos = Loop.nowNanos()
            // A failed check counts against the breaker; a passing one proves nothing about serving.
            if !up, b.breaker.recordFailure(now: b.lastCheckedNanos) == .opened { self.onBreakerOpened?(b) }
            if up && b.configuredModels == nil { self.fetchModels(b) } else { self.unsettled.remove(b.id) }
            if changed { self.onChange?(b) }
        }
    }

    private func fetchModels(_ b: Backend) {
        UpstreamFetch(loop: loop, pool: b.pool, path: "/v1/models", headers: headers(b), timeout: .seconds(2)) { [weak self] status, body in
            defer { self?.unsettled.remove(b.id) }
            guard status == 200 else { return }
            let parsed = body.withUnsafeBytes { JSONDocument.parse($0) }
            guard case .success(let doc) = parsed else { return }
            let data = json_object_get(doc.root, "data")
            guard JSONValue.type(data) == JSONValue.array else { return }
            var ids: [String] = []
            var objects: [[UInt8]] = []
            for i in 0..<json_array_size(data) {
                let m = json_array_get(data, i)
                guard let id = JSONValue.string(json_object_get(m, "id")) else { continue }
                ids.append(id)
                objects.append(JSONDocument.serialize(m))
            }
            b.discoveredModels = ids
            b.modelObjects = objects
            self?.onModelsDiscovered?(b)
        }
    }
}

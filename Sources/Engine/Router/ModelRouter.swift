// ModelRouter: picks the model a request goes to (issue 4), as a pure value (standard library only).
// No model or "auto" → the fast model below the token threshold, else the large one (equality goes
// large, as in the original §2.2). An explicit model is never re-routed; it is only checked
// against the models the backends serve, once those lists are known. The driver supplies the
// estimate (TokenEstimator) and the lookup; the result feeds the cache key and the pool.
// Pure: no imports, no I/O.

/// Where the router sends a request.
public enum RouteDecision: Equatable, Sendable {
    /// Forward with this model name; `routed` is true when the engine chose it (absent or "auto").
    case model(String, routed: Bool)
    /// The client named a model no backend serves: answer 404 `model_not_found`.
    case unknownModel(String)
}

public struct ModelRouter: Equatable, Sendable {
    public var fastModel: String
    public var largeModel: String
    /// Prompts estimated strictly below this many tokens go to `fastModel`.
    public var threshold: Int

    public init(fastModel: String, largeModel: String, threshold: Int) {
        self.fastModel = fastModel
        self.largeModel = largeModel
        self.threshold = threshold
    }

    /// `isKnown(name)` answers whether some backend serves `name`, or nil while the backends'
    /// model lists are not known yet (then the request is forwarded and vLLM has the last word).
    /// Routed choices are not checked: they come from the config, and a missing backend for them
    /// is the pool's 503, not the client's 404. An empty string counts as absent (as the original);
    /// "auto" is matched exactly (case-sensitive), so a model really named "Auto" stays reachable.
    public func route(requested: String?, promptTokens: Int, isKnown: (String) -> Bool?) -> RouteDecision {
        guard let name = requested, !name.isEmpty, name != "auto" else {
            return .model(promptTokens < threshold ? fastModel : largeModel, routed: true)
        }
        if isKnown(name) == false { return .unknownModel(name) }
        return .model(name, routed: false)
    }
}

// ModelRouter: picks the model a request goes to (issue 4), as a pure value (standard library only).
// No model or "auto" → the fast model below the token threshold, else the large one (equality goes
// large, as in the original §2.2). An explicit model is never re-routed; it is only checked
// against the models the backends serve, once those lists are known. A routed choice that no
// backend serves (the registry names a model the backends do not have, e.g. the shipped
// sim-model in front of a real vLLM) goes to the one model the backends serve, as vLLM itself
// answers a request without `model`; with several served and no served fallback it is a 404
// that names the choice and what is served. The driver supplies the estimate (TokenEstimator)
// and the lookups; the result feeds the cache key and the pool.
// Pure: no imports, no I/O.

/// Where the router sends a request.
public enum RouteDecision: Equatable, Sendable {
    /// Forward with this model name; `routed` is true when the engine chose it (absent or "auto").
    case model(String, routed: Bool)
    /// The client named a model no backend serves: answer 404 `model_not_found`.
    case unknownModel(String)
    /// The client named no model and the registry's choice `model` is served by no backend, while
    /// the backends serve several others (`served`) and no served fallback: answer 404
    /// `model_not_found` naming both.
    case unservedDefault(String, served: [String])
}

public struct ModelRouter: Equatable, Sendable {
    public var fastModel: String
    public var largeModel: String
    /// Prompts estimated strictly below this many tokens go to `fastModel`.
    public var threshold: Int
    /// model_registry.fallback_model: a served one keeps today's path for an unserved choice (the
    /// pool finds no backend, the fallback answers with X-Fallback).
    public var fallbackModel: String?

    public init(fastModel: String, largeModel: String, threshold: Int, fallbackModel: String? = nil) {
        self.fastModel = fastModel
        self.largeModel = largeModel
        self.threshold = threshold
        self.fallbackModel = fallbackModel
    }

    /// The registry's choice for a request without a model.
    public func choice(promptTokens: Int) -> String { promptTokens < threshold ? fastModel : largeModel }

    /// `isKnown(name)` answers whether some backend serves `name`, or nil while the backends'
    /// model lists are not known yet (then the request is forwarded and vLLM has the last word).
    /// `servedModels()` is every model the backends serve, sorted (nil while a list is unknown);
    /// it is asked only when the registry's choice is known not to be served. An empty string
    /// counts as absent (as the original); "auto" is matched exactly (case-sensitive), so a model
    /// really named "Auto" stays reachable.
    public func route(requested: String?, promptTokens: Int, isKnown: (String) -> Bool?,
                      servedModels: () -> [String]? = { nil }) -> RouteDecision {
        guard let name = requested, !name.isEmpty, name != "auto" else {
            let chosen = choice(promptTokens: promptTokens)
            if isKnown(chosen) != false { return .model(chosen, routed: true) }
            let served = servedModels() ?? []
            if served.count == 1 { return .model(served[0], routed: true) }
            if let fb = fallbackModel, isKnown(fb) == true { return .model(chosen, routed: true) }
            return .unservedDefault(chosen, served: served)
        }
        if isKnown(name) == false { return .unknownModel(name) }
        return .model(name, routed: false)
    }
}

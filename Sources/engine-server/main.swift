// engine-server: flags, config, one Loop, signals. No logic (style A).
import ArgumentParser
import Engine
import Logging
import Reactor

#if canImport(Glibc)
import Glibc
#endif

struct EngineServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-server",
        abstract: "OpenAI-compatible proxy in front of vLLM: one libevent loop per process.")

    @Option(help: "Config file (YAML).") var config: String = "configs/default.yaml"
    @Option(help: "Listen address (overrides server.host).") var host: String?
    @Option(help: "Listen port (overrides server.port; 0 = any free port).") var port: Int?

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let env = currentEnvironment()
        let cfg: EngineConfig
        do {
            cfg = try ConfigLoader.load(path: config, environment: env)
        } catch {
            FileHandleStderr.write("\(error)\n")
            throw ExitCode(2)
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = Logger.Level(rawValue: cfg.server.logLevel) ?? .info
            return h
        }
        var logger = Logger(label: "engine")
        logger.logLevel = Logger.Level(rawValue: cfg.server.logLevel) ?? .info
        let loop = Loop()
        let runtime: EngineRuntime
        do {
            runtime = try EngineRuntime(config: cfg, loop: loop, logger: logger)
        } catch {
            FileHandleStderr.write("\(error)\n")
            throw ExitCode(2)
        }
        let h = host ?? cfg.server.host
        let bound: Int
        do {
            bound = try runtime.start(host: h, port: port ?? cfg.server.port)
        } catch {
            FileHandleStderr.write("engine: cannot listen on \(h):\(port ?? cfg.server.port): \(error)\n")
            throw ExitCode(1)
        }
        print("engine listening on \(h):\(bound)")
        fflush(nil)
        let term = SignalWatcher(loop: loop, signal: SIGTERM) { loop.stop() }
        let intr = SignalWatcher(loop: loop, signal: SIGINT) { loop.stop() }
        loop.run()
        term.close()
        intr.close()
        runtime.stop()
    }
}

func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    return env
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var s = s
        s.withUTF8 { p in _ = Glibc.write(2, p.baseAddress, p.count) }
    }
}

EngineServer.main()

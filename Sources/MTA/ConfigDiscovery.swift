import Foundation

/// Which config a command uses: `-c FILE` (`-C FILE` for sendmail and mailq), else `$DUALMTA_CONFIG`, else
/// `/etc/dualmta/dualmta.conf` when it exists, else the embedded defaults. A client command (send, sendmail, mailq,
/// queue) on the embedded defaults must find the spool they name already there: otherwise it would create a spool
/// in the current directory that no daemon reads (the way cron's `sendmail` used to lose mail).
public enum ConfigDiscovery {
    public static let systemPath = "/etc/dualmta/dualmta.conf"
    public static let environmentVariable = "DUALMTA_CONFIG"

    /// Where the settings come from, and why (for messages).
    public enum Source: Equatable, Sendable {
        case option(String)
        case environment(String)
        case system(String)
        case defaults

        public var path: String? {
            switch self {
            case .option(let path), .environment(let path), .system(let path): return path
            case .defaults: return nil
            }
        }
    }

    /// The pure choice, in the documented order. An empty `$DUALMTA_CONFIG` counts as unset.
    public static func source(option: String?, environment: [String: String], fileExists: (String) -> Bool)
        -> Source
    {
        if let option { return .option(option) }
        if let value = environment[environmentVariable], !value.isEmpty { return .environment(value) }
        if fileExists(systemPath) { return .system(systemPath) }
        return .defaults
    }

    /// The refusal of a client command that has neither a config nor an existing spool; nil when it may go on.
    public static func clientRefusal(source: Source, spoolDirectory: String, spoolExists: Bool) -> String? {
        guard source == .defaults, !spoolExists else { return nil }
        let cwd = FileManager.default.currentDirectoryPath
        return "no config (no -c FILE, no $\(environmentVariable), no \(systemPath)) and no spool at "
            + "\(spoolDirectory.hasPrefix("/") ? spoolDirectory : cwd + "/" + spoolDirectory): "
            + "name the running MTA's config with -c FILE or $\(environmentVariable)"
    }

    /// Resolves and loads the config for a command. `client` commands refuse to work without a config and without
    /// an existing spool (exit 78), rather than create one.
    public static func load(option: String?, client: Bool, checkingFiles: Bool = false) throws(ConfigLoadError)
        -> (Configuration, Source)
    {
        let chosen = source(
            option: option, environment: ProcessInfo.processInfo.environment,
            fileExists: { FileManager.default.fileExists(atPath: $0) })
        var configuration = Configuration.defaults
        if let path = chosen.path {
            do throws(ConfigurationError) {
                configuration = try ConfigurationFile.load(path: path, checkingFiles: checkingFiles)
            } catch {
                throw .invalid(error)
            }
        }
        if client {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: configuration.spoolDirectory, isDirectory: &isDirectory)
            if let refusal = clientRefusal(
                source: chosen, spoolDirectory: configuration.spoolDirectory,
                spoolExists: exists && isDirectory.boolValue)
            {
                throw .noConfig(refusal)
            }
        }
        return (configuration, chosen)
    }
}

/// Both cases exit 78 (EX_CONFIG).
public enum ConfigLoadError: Error, CustomStringConvertible, Sendable {
    case invalid(ConfigurationError)
    case noConfig(String)

    public var description: String {
        switch self {
        case .invalid(let error): return "\(error)"
        case .noConfig(let text): return text
        }
    }
}

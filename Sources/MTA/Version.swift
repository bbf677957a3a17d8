/// The release this build reports (`dualmta --version`, the SMTP banner stays version-free on purpose).
public enum DualMTAVersion {
    public static let text = "0.9.0"
}

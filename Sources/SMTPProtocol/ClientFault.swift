/// Failures on purpose on the sending side: before the client session acts on a reply, the driver may substitute
/// an injected one (the session takes it as the peer's) or declare the connection lost. The session knows no rule
/// syntax; the hook decides.

/// The reply being answered, in the words of the fault rules.
public enum ClientFaultStage: String, Sendable, Hashable {
    case banner, ehlo, starttls, mail, rcpt, data
    /// The reply after the final dot.
    case dataEnd = "data-end"
}

/// What replaces the peer's reply.
public enum ClientFault: Sendable, Hashable {
    /// Taken as the peer's reply.
    case reply(Reply)
    /// As if the connection closed before the reply came.
    case drop
}

/// Consulted for each reply with its stage and, at rcpt, the recipient it answers.
public typealias ClientFaultHook = @Sendable (ClientFaultStage, _ recipient: String?) -> ClientFault?

import DNS
import NetAddress

/// The I/O half of routing: asks a `DNSResolver` exactly the questions the planner needs, nothing more.
/// - address literal, local domain, static route to an address: no question at all;
/// - static route to a host: that host's A/AAAA (never its MX);
/// - otherwise MX; after a failed MX lookup, NXDOMAIN or a null MX: no address question (never a fallback);
///   after NODATA: the domain's own A/AAAA (implicit MX); else each MX host's A/AAAA, skipping numeric targets and
///   hosts at or below the best preference where one of our names appears (they are pruned anyway).
/// Only families in `capability.usableFamilies` are asked, preferred family first. Blocking: call off the event loop.
public struct RouteResolver: Sendable {
    public let resolver: any DNSResolver

    public init(resolver: any DNSResolver) {
        self.resolver = resolver
    }

    public func gather(_ destination: Destination, context: RoutingContext) -> RouteLookups {
        guard case .domain(let domain) = destination, !context.policy.identity.isLocalDomain(domain) else {
            return RouteLookups()
        }
        var lookups = RouteLookups()
        if let route = context.policy.staticRoutes.route(for: domain) {
            if case .host(let host, _) = route.target {
                lookups.hosts[host] = addresses(of: host, context: context)
            }
            return lookups
        }
        let answer = resolver.mx(domain)
        lookups.mx = answer
        switch answer {
        case .temporaryFailure, .noSuchDomain:
            return lookups
        case .noData, .records([], _):
            lookups.hosts[domain] = addresses(of: domain, context: context)
        case .records(let records, _):
            guard !records.contains(where: \.isNullMX) else { return lookups }
            let selfByName = records.filter { context.policy.identity.isSelf(name: $0.exchange) }.map(\.preference)
                .min()
            var asked: Set<String> = []
            for record in records.sorted(by: { $0.preference < $1.preference }) {
                if let selfByName, record.preference >= selfByName { continue }
                if IPAddress(record.exchange) != nil || record.exchange.hasPrefix("[") { continue }
                guard asked.insert(record.exchange).inserted else { continue }
                lookups.hosts[record.exchange] = addresses(of: record.exchange, context: context)
            }
        }
        return lookups
    }

    /// Gathers and plans in one call (what delivery and `dualmta route` use).
    public func plan(_ destination: Destination, context: RoutingContext) -> RoutePlan {
        RoutePlanner.plan(destination, lookups: gather(destination, context: context), context: context)
    }

    private func addresses(of host: String, context: RoutingContext) -> HostAddresses {
        var answers = HostAddresses()
        for family in context.policy.capability.familyOrder {
            answers[family] = resolver.addresses(host, family: family)
        }
        return answers
    }
}

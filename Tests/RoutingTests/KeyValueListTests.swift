import Routing
import Testing

@Suite struct KeyValueListTests {
    @Test(
        "entries split at commas and blanks; blanks around = stay inside the entry",
        arguments: [
            ("a=1, b=2", ["a=1", "b=2"]),
            ("a=1 b=2", ["a=1", "b=2"]),
            ("d = [x]:p", ["d=[x]:p"]),
            ("d =[x]:p, e= y", ["d=[x]:p", "e=y"]),
            ("example.net = [192.0.2.7]:2526 ,  * = [::1]:10025", ["example.net=[192.0.2.7]:2526", "*=[::1]:10025"]),
            ("a=, b=2", ["a=", "b=2"]),
            ("lonely", ["lonely"]),
            ("", []),
        ])
    func entries(text: String, expected: [String]) {
        #expect(KeyValueList.entries(text) == expected)
    }

    @Test("routes accept blanks around =")
    func routesWithSpaces() throws {
        let routes = try StaticRoutes(parsing: "d.test = [127.0.0.1]:2526, * = [::1]:10025")
        #expect(routes.entries.map(\.description) == ["d.test=[127.0.0.1]:2526", "*=[::1]:10025"])
    }
}

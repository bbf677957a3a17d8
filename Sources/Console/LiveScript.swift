/// The one script of the console: it polls `/api/events` and reloads the page when something happened after it was
/// drawn (more events from the page's second on than it saw, `data-since`/`data-seen`: journal times are whole
/// seconds). Fixed text, allowed by its hash in the CSP; the pages work the same without it.
public enum LiveScript {
    public static let text =
        "document.body.dataset.live='on';var page=document.body.dataset;setInterval(function(){"
        + "fetch('/api/events?since='+page.since).then(function(r){return r.json()}).then(function(j){"
        + "if(j.events.length>Number(page.seen))location.reload()}).catch(function(){})},2000);"
    /// `sha256-` of `text` (base64), as the Content-Security-Policy names it; the browser test checks both.
    public static let hash = "sha256-Vh17EvC21lVnsKLM+ZEV8xjp8zumQ5EGIWQMO6jimxI="
}

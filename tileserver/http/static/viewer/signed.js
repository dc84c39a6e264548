/* Signed URLs: a viewer opened as /viewer/ID?exp=...&sig=... (POST /auth/sign's "viewer"
 * link) carries the signature to every request it makes, so it needs no credential. */
(function (ns) {
  "use strict";

  function signature() {
    var params = new URLSearchParams(window.location.search);
    var exp = params.get("exp");
    var sig = params.get("sig");
    return exp && sig ? "exp=" + encodeURIComponent(exp) + "&sig=" + encodeURIComponent(sig) : "";
  }

  var query = signature();

  // ``url`` with the page's signature added to its query (unchanged when unsigned).
  function withSignature(url) {
    if (!query) {
      return url;
    }
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + query;
  }

  ns.signed = { active: query !== "", url: withSignature };
})((window.TileViewer = window.TileViewer || {}));

// Starts Swagger UI on the docs page (asynccore.apidocs): the OpenAPI document it shows is the one the
// page names in #swagger-ui's data-openapi-url, so this one file serves every service. It is a file of
// its own because the page's Content-Security-Policy runs scripts from this origin only, none inline.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The public validator is another origin: the CSP would refuse it, and the document is ours.
    validatorUrl: null,
  });
})();

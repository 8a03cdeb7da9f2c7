package schema

import _ "embed"

// OpenAPI is the REST API's OpenAPI 3.1 document.
//
//go:embed openapi.yaml
var OpenAPI []byte

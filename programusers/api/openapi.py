"""The API's OpenAPI document, served at /openapi.json: the platform's routes, headers and envelope."""

_HEADERS = [
    {"name": "x-authenticated-user-token", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "the user's JWT, RS256, verified by this service"},
    {"name": "X-Channel-ID", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "the channel (organisation); the stored tag is <tag>:<channel>"},
    {"name": "X-Authenticated-Userid", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "when given, it must be the token's user"},
]
_TAG = {"name": "tag", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}
_ENVELOPE = {"type": "object", "required": ["id", "ver", "ts", "params", "responseCode"], "properties": {
    "id": {"type": "string"}, "ver": {"type": "string"}, "ts": {"type": "string"},
    "params": {"type": "object", "properties": {
        "resmsgid": {"type": "string"}, "msgid": {"type": "string"}, "status": {"enum": ["successful", "failed"]},
        "err": {"type": "string"}, "errmsg": {"type": "string"}}},
    "responseCode": {"enum": ["OK", "CLIENT_ERROR", "UNAUTHORIZED", "FORBIDDEN", "RESOURCE_NOT_FOUND",
                              "REQUEST_TOO_LARGE", "SERVER_ERROR"]},
    "result": {"type": "object"}}}
_RESPONSES = {str(code): {"description": text, "content": {"application/json": {"schema": _ENVELOPE}}}
              for code, text in ((200, "done (a job that is not the caller's reads as 'no job')"),
                                 (400, "invalid request"), (401, "missing or invalid token"),
                                 (403, "no channel, no role, or another user's id"), (413, "body over 1 MiB"),
                                 (500, "a store is unavailable"))}

_SUBMIT_BODY = {"type": "object", "properties": {
    "params": {"type": "object", "properties": {"msgid": {"type": "string"}}},
    "request": {"type": "object", "required": ["tag", "dataset", "datasetConfig"], "properties": {
        "tag": {"type": "string"}, "dataset": {"enum": ["program-user-exhaust"]}, "requestedBy": {"type": "string"},
        "datasetConfig": {"type": "object"}, "encryptionKey": {"type": "string", "maxLength": 50},
        "output_format": {"type": "string"}}}}}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "programusers data-exhaust API", "version": "1.0",
             "description": "The platform's on-demand data-exhaust routes for the program user report."},
    "paths": {
        "/request/submit": {"post": {
            "summary": "request a report", "parameters": _HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _SUBMIT_BODY}}},
            "responses": _RESPONSES}},
        "/request/read/{tag}": {"get": {
            "summary": "a job, with signed download links once it succeeded",
            "parameters": [*_HEADERS, _TAG, {"name": "requestId", "in": "query", "required": True,
                                             "schema": {"type": "string"}}],
            "responses": _RESPONSES}},
        "/request/list/{tag}": {"get": {
            "summary": "the caller's jobs of a tag (every job of the channel for ORG_ADMIN, REPORT_ADMIN)",
            "parameters": [*_HEADERS, _TAG, {"name": "limit", "in": "query", "required": False,
                                             "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                        "default": 100}}],
            "responses": _RESPONSES}},
        "/health": {"get": {"summary": "PostgreSQL and the report store answer",
                            "responses": {"200": {"description": "healthy"}, "503": {"description": "not"}}}},
    },
}

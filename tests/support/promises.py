"""What the docs and the client specifications promise, written out as literals.

Tests compare answers with these, never with ``autoconfig.spec``: a constant
changed there changes the code and any test that reads it together, and
everything would stay green while every client broke.  tests/test_promises.py
checks that docs/clients.md, where the answers are documented, still says
each of these.
"""

# docs/clients.md, "What clients get": every client answer.
CACHE_CONTROL = "private, no-cache"

# Thunderbird (draft-ietf-mailmaint-autoconfig and Thunderbird's own lookups).
THUNDERBIRD_PATHS = (
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/.well-known/mail-v1.xml",
)
THUNDERBIRD_CONTENT_TYPE = "application/xml; charset=utf-8"

# Apple configuration profiles.
APPLE_PATHS = ("/apple/mail.mobileconfig", "/mobileconfig")
APPLE_CONTENT_TYPE = "application/x-apple-aspen-config"

# Outlook autodiscover ([MS-OXDSCLI] POX, [MS-OXDISCO] JSON pointer).
OUTLOOK_POX_PATH = "/autodiscover/autodiscover.xml"
OUTLOOK_POX_SPELLINGS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
OUTLOOK_JSON_PATH = "/autodiscover/autodiscover.json"
OUTLOOK_JSON_V1_PATH = "/autodiscover/autodiscover.json/v1.0/"
OUTLOOK_CONTENT_TYPE = "text/xml; charset=utf-8"
OUTLOOK_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
OUTLOOK_ERROR_NO_CONFIGURATION = "501"
AUTODISCOVER_V1 = "AutodiscoverV1"

# The people's page.
SETUP_PATH = "/setup"

# [MS-OXDSCLI] error codes docs/clients.md names, and the other schema clients ask for.
OUTLOOK_ERROR_ADDRESS_NOT_FOUND = "500"
OUTLOOK_ERROR_INVALID_REQUEST = "600"
OUTLOOK_ERROR_SCHEMA_UNAVAILABLE = "601"
MOBILESYNC_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
# [MS-ASCMD] 2.2.1.1: the namespace of ActiveSync's autodiscover request (phones set up as "Exchange"),
# and the namespace of every answer's root element.
MOBILESYNC_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
AUTODISCOVER_BASE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_JSON_ERROR_PROTOCOL = "InvalidProtocol"

"""Constants from the client specifications, shared by the code and the tests.

Keeping them in one module lets the tests assert against the spec's own
names rather than against strings copied from the implementation.
"""

import re

# Thunderbird / draft-ietf-mailmaint-autoconfig
THUNDERBIRD_PATHS = (
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/.well-known/mail-v1.xml",
)
THUNDERBIRD_CONTENT_TYPE = "application/xml; charset=utf-8"
CLIENTCONFIG_VERSION = "1.1"
# How Thunderbird expands the user name; see config key servers.*.username.
USERNAME_PLACEHOLDERS = {"address": "%EMAILADDRESS%", "local-part": "%EMAILLOCALPART%"}
THUNDERBIRD_SERVER_TYPES = {"imap": "imap", "pop3": "pop3", "smtp": "smtp"}

# Every client-facing document: no shared caches, so a switch flipped in webmail
# is visible to the next request.
CACHE_CONTROL = "private, no-cache"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

# Input limits.
# A Host header we take: a name or an IPv6 literal, and a port; anything else is a 400 (autoconfig.web).
HOST_FIELD = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
MAX_QUERY_STRING = 2048
MAX_ADMIN_BODY = 4096
# Dovecot's auth-policy requests are a few hundred bytes; IMAP ID data (device_id) can add a few KiB.
MAX_POLICY_BODY = 64 * 1024
# JSON bodies (admin API, Dovecot) are flat objects; Dovecot's nested attributes ("a/b=...") add a level or two.
MAX_JSON_DEPTH = 16

# Apple configuration profiles (Apple's device-management schema:
# TopLevel.yaml and com.apple.mail.managed.yaml).
APPLE_PROFILE_PATHS = ("/apple/mail.mobileconfig", "/mobileconfig")
# The page for people (and the QR codes for phones); every decline points to it.
SETUP_PATH = "/setup"
APPLE_CONTENT_TYPE = "application/x-apple-aspen-config"
APPLE_MAIL_PAYLOAD_TYPE = "com.apple.mail.managed"
APPLE_ACCOUNT_TYPES = {"imap": "EmailTypeIMAP", "pop3": "EmailTypePOP"}
APPLE_AUTHENTICATION = {"password-cleartext": "EmailAuthPassword", "password-encrypted": "EmailAuthCRAMMD5"}

# Outlook autodiscover, plain old XML ([MS-OXDSCLI]) and the JSON pointer ([MS-OXDISCO]).
# Clients vary the case of this prefix; web/outlook.py folds it to these spellings.
AUTODISCOVER_PREFIX = "/autodiscover/"
OUTLOOK_POX_PATH = "/autodiscover/autodiscover.xml"
OUTLOOK_JSON_PATH = "/autodiscover/autodiscover.json"
OUTLOOK_JSON_V1_PATH = "/autodiscover/autodiscover.json/v1.0/"
OUTLOOK_CONTENT_TYPE = "text/xml; charset=utf-8"
# Request bodies we read; a missing Content-Type is tolerated, anything else is refused.
OUTLOOK_REQUEST_MIMETYPES = ("text/xml", "application/xml")
OUTLOOK_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
# The settings answer's schema, which the request must name in AcceptableResponseSchema.
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# Root element of every answer, and the namespace of error answers.
AUTODISCOVER_BASE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
# Exchange ActiveSync's autodiscover ([MS-ASCMD] 2.2.1.1): phones set up as "Exchange" send their
# request in this namespace and ask for the mobilesync response schema.  There is no ActiveSync here,
# so they get error 601, with Response (and the Error in it) in the mobilesync response namespace.
MOBILESYNC_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
OUTLOOK_ERROR_ADDRESS_NOT_FOUND = "500"
OUTLOOK_ERROR_NO_CONFIGURATION = "501"
OUTLOOK_ERROR_INVALID_REQUEST = "600"
OUTLOOK_ERROR_SCHEMA_UNAVAILABLE = "601"
OUTLOOK_ERROR_SERVER = "603"
OUTLOOK_PROTOCOL_TYPES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
# Outlook's Encryption names: "SSL" is implicit TLS, "TLS" is STARTTLS.
OUTLOOK_ENCRYPTION = {"SSL": "SSL", "STARTTLS": "TLS"}
OUTLOOK_DEFAULT_MAX_BODY = 16384
# JSON pointer (newer Outlook asks it first).
AUTODISCOVER_V1 = "AutodiscoverV1"
OUTLOOK_JSON_ERROR_PROTOCOL = "InvalidProtocol"
OUTLOOK_JSON_ERROR_USER = "InvalidUser"
OUTLOOK_JSON_ERROR_REQUEST = "InvalidRequest"
OUTLOOK_JSON_ERROR_NOT_SERVED = "NotFound"
OUTLOOK_JSON_ERROR_UNAVAILABLE = "ServiceUnavailable"

# RFC 6186 / RFC 8314 SRV service labels, by (protocol, socket) of a configured server.
SRV_SERVICES = {
    ("imap", "SSL"): "imaps",
    ("imap", "STARTTLS"): "imap",
    ("pop3", "SSL"): "pop3s",
    ("pop3", "STARTTLS"): "pop3",
    ("smtp", "SSL"): "submissions",
    ("smtp", "STARTTLS"): "submission",
}
# Implicit TLS first (RFC 8314), IMAP before POP (RFC 6186 section 3.4).
DEFAULT_SRV_PRIORITIES = {"imaps": 0, "submissions": 0, "imap": 10, "submission": 10, "pop3s": 20, "pop3": 30}

# The admin API (the webmail's): every path under it answers JSON.
ADMIN_PREFIX = "/admin/v1"

"""Constants from the client specifications, shared by the code and the tests.

Keeping them in one module lets the tests assert against the spec's own
names rather than against strings copied from the implementation.
"""

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
MAX_QUERY_STRING = 2048
MAX_ADMIN_BODY = 4096
# Dovecot's auth-policy requests are a few hundred bytes; IMAP ID data (device_id) can add a few KiB.
MAX_POLICY_BODY = 64 * 1024

# Apple configuration profiles (Apple's device-management schema:
# TopLevel.yaml and com.apple.mail.managed.yaml).
APPLE_PROFILE_PATHS = ("/apple/mail.mobileconfig", "/mobileconfig")
APPLE_CONTENT_TYPE = "application/x-apple-aspen-config"
APPLE_MAIL_PAYLOAD_TYPE = "com.apple.mail.managed"
APPLE_ACCOUNT_TYPES = {"imap": "EmailTypeIMAP", "pop3": "EmailTypePOP"}
APPLE_AUTHENTICATION = {"password-cleartext": "EmailAuthPassword", "password-encrypted": "EmailAuthCRAMMD5"}

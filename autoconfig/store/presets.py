"""Presets: the query or filter that mirrors what a mail stack's own Dovecot checks.

A preset is data, not code: the text this service runs (a SELECT for the
``sql`` source, a filter and an attribute for the ``ldap`` source) and
where it comes from.  The rule each one follows: offer a protocol exactly
when that stack's Dovecot would let a TLS login to that protocol through,
with the same columns or attributes and the same mailbox and domain
conditions.  This service only ever sends clients to TLS servers (implicit
TLS or STARTTLS), so only what Dovecot checks on a TLS connection counts.

Where the conditions come from is named next to each preset, file and
revision, so a reader can compare them when the stack changes.  What a
preset cannot mirror: a per-client-address restriction (iRedMail's
``allow_nets``, checked against the address a login comes from, which
this service never knows) and the password itself.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dovecot's %c / %{secured}: on a TLS connection (implicit TLS or STARTTLS) Dovecot 2.3.19
# sends "secured=tls" to its auth process and %Lc expands to "tls" (seen with Debian 12's
# dovecot 2.3.19.1: a passdb path with %Lc opened "...-tls" for IMAPS and for STARTTLS);
# Dovecot 2.4 sets %{secured} to "TLS" (src/auth/auth-request-var-expand.c), so iRedMail's
# %{secured | lower} is "tls" (seen with Debian 13's dovecot 2.4.1: a passwd_file_path with
# %{secured} opened "...-TLS" for IMAPS and for STARTTLS).  A plain-text login from loopback
# or login_trusted_networks is "secured" on both.  So on every Dovecot iRedMail ships today,
# a TLS login to IMAP checks mailbox.enableimaptls, and to POP3 mailbox.enablepop3tls: not
# enableimap/enablepop3 (plain-text connections) and not enableimapsecured (older Dovecot
# 2.3 releases, and plain text from loopback or trusted networks).


@dataclass(frozen=True)
class SQLPreset:
    name: str
    dialects: tuple[str, ...]  # "mysql", "postgresql"
    query: str
    mirrors: str


@dataclass(frozen=True)
class LDAPPreset:
    name: str
    filter: str
    attribute: str
    imap_values: tuple[str, ...]
    pop_values: tuple[str, ...]
    mirrors: str


# iRedMail, SQL (MariaDB/MySQL and PostgreSQL share the query text).
# Mirrors iredmail/iRedMail samples/dovecot/dovecot-sql.conf at 2de2d0eb8063ec09c718fd880c7f1302d04dd87c
# (Dovecot 2.3: password_query and user_query, "enable%Ls%Lc") and samples/dovecot/dovecot-2.4-mariadb.conf
# and dovecot-2.4-pgsql.conf at 1630fa036adf52d369f1f88323076df2ee7e9c57 (Dovecot 2.4: passdb and userdb,
# "enable%{protocol | lower}%{secured | lower}").  A login needs both lookups, so it needs:
#   mailbox.username = the login, mailbox.enable<protocol>tls = 1, mailbox.active = 1,
#   the mailbox's domain row with domain.active = 1 and domain.backupmx = 0 (the userdb query).
IREDMAIL_SQL = SQLPreset(
    name="iredmail",
    dialects=("mysql", "postgresql"),
    query=(
        "SELECT"
        " mailbox.enableimaptls = 1 AND mailbox.active = 1 AND domain.active = 1 AND domain.backupmx = 0,"
        " mailbox.enablepop3tls = 1 AND mailbox.active = 1 AND domain.active = 1 AND domain.backupmx = 0"
        " FROM mailbox JOIN domain ON domain.domain = mailbox.domain"
        " WHERE mailbox.username = %(address)s"
    ),
    mirrors="iRedMail Dovecot passdb/userdb SQL (dovecot-sql.conf, dovecot-2.4-*.conf): enable<proto>tls on TLS",
)

# mailcow (MariaDB).  Mirrors what mailcow-dockerized checks for a Dovecot password login
# since PR #6716 ("Prevent user login if protocol access has been disabled", merged
# 2025-09-09, fixing issue #6610).  Dovecot's Lua passdb, data/conf/dovecot/auth/passwd-verify.lua
# at 354e1d108a2cf888e304fe334c9d2bc009f5bdac, posts the login and its service (imap, pop3)
# to mailcowauth.php, which tries apppass_login and then user_login in
# data/web/inc/functions.auth.inc.php (as changed by PR #6716).  A login to protocol P
# goes through when the mailbox row is not a resource (kind NOT REGEXP
# 'location|thing|group'; that filter is in the WHERE, so a resource has no row) and either
#   - the mailbox password: mailbox.active = '1' (2, "disallow login", is refused), its
#     domain active, attributes.P_access missing or '1' (present and anything else is
#     refused), and mailbox.authsource 'mailcow', 'keycloak' or 'ldap' (any other value,
#     NULL included, never logs in).  keycloak and ldap mailboxes also depend on the
#     identity-provider settings and the directory, which are not in these tables; they
#     are treated like 'mailcow' here.  Or
#   - an app password: some app_passwd row for the mailbox with active = '1' and
#     P_access = '1', the mailbox active and its domain active.  mailcow does not read the
#     mailbox's own attributes.P_access or its authsource for an app password.
# Older mailcow differs.  The 2022-2023 passwd-verify.lua queried MariaDB itself and also
# refused mailbox-password logins with attributes.force_pw_update = '1'; today
# force_pw_update only holds back the web UI session, and IMAP/POP3 logins go through.
# From 2024 until PR #6716, user_login ignored attributes.P_access for the mailbox password
# (issue #6610); this preset follows the fixed behaviour.  mailcow does not look at TLS
# here: its Dovecot sets disable_plaintext_auth = yes, so every password login from
# outside (not 127.0.0.1 or SOGo) needs TLS anyway.
_MAILCOW_PROTOCOL = (
    "(mailbox.active = '1' AND domain.active = '1' AND ("
    "(mailbox.authsource IN ('mailcow', 'keycloak', 'ldap')"
    " AND IFNULL(JSON_UNQUOTE(JSON_VALUE(mailbox.attributes, '$.{p}_access')), '1') = '1')"
    " OR EXISTS (SELECT 1 FROM app_passwd WHERE app_passwd.mailbox = mailbox.username"
    " AND app_passwd.active = '1' AND app_passwd.{p}_access = '1')))"
)
MAILCOW_SQL = SQLPreset(
    name="mailcow",
    dialects=("mysql",),
    query=(
        "SELECT "
        + _MAILCOW_PROTOCOL.format(p="imap")
        + ", "
        + _MAILCOW_PROTOCOL.format(p="pop3")
        + " FROM mailbox JOIN domain ON domain.domain = mailbox.domain"
        " WHERE mailbox.username = %(address)s AND mailbox.domain = %(domain)s"
        " AND mailbox.kind NOT REGEXP 'location|thing|group'"
    ),
    mirrors=(
        "mailcow passwd-verify.lua -> mailcowauth.php user_login/apppass_login (PR #6716, 2025-09):"
        " no resources, active mailbox and domain, authsource, P_access, app passwords"
    ),
)

# iRedMail, OpenLDAP.  Mirrors iredmail/iRedMail samples/dovecot/dovecot-ldap.conf at
# a3410ab28cf3a1166ddcc60af6003c6fae7ddb52 (Dovecot 2.3: pass_filter and user_filter,
# "(enabledService=%Ls%Lc)") and samples/dovecot/dovecot-2.4-openldap.conf at
# 1630fa036adf52d369f1f88323076df2ee7e9c57 (Dovecot 2.4: "(enabledService=%{protocol}%{secured | lower})").
# The entry must be an active mailUser in a domain not disabled, with enabledService=mail,
# found by its mail address or, when enabledService=shadowaddress, by a shadowAddress;
# on TLS the protocol needs enabledService=imaptls or pop3tls.  Values are compared exactly
# (case-sensitive), so a value Dovecot might match without regard to case is never offered
# here unless it is spelled as above: the safe side.
IREDMAIL_LDAP = LDAPPreset(
    name="iredmail",
    filter=(
        "(&(objectClass=mailUser)(accountStatus=active)(!(domainStatus=disabled))(enabledService=mail)"
        "(|(mail=%(address)s)(&(enabledService=shadowaddress)(shadowAddress=%(address)s))))"
    ),
    attribute="enabledService",
    imap_values=("imaptls",),
    pop_values=("pop3tls",),
    mirrors="iRedMail Dovecot LDAP pass_filter/user_filter (dovecot-ldap.conf, dovecot-2.4-openldap.conf)",
)

SQL_PRESETS = {preset.name: preset for preset in (IREDMAIL_SQL, MAILCOW_SQL)}
LDAP_PRESETS = {preset.name: preset for preset in (IREDMAIL_LDAP,)}

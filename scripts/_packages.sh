# Shared by scripts/test and scripts/debian13: the Debian packages the test
# suite starts or builds against, on Debian 12 and in the Debian 13 userland
# alike (the names are the same on both).
#
# Real servers the fixtures start on loopback: DNS, PostgreSQL, IMAP/POP, a
# browser, a TLS front and a load generator; openssl verifies signed profiles;
# Roundcube on PHP-FPM is the webmail of the end-to-end story (tests/test_story.py);
# its plugin needs php-curl, whose timeout bounds a whole call to the admin API.
# MariaDB and OpenLDAP serve the read-only mail-database sources; the -dev
# packages (and pkg-config) let pip build mysqlclient and python-ldap.
# systemd-analyze (systemd) checks the service unit, whose ExecReload is procps' kill.
# zbarimg (zbar-tools) reads the setup page's QR codes from Chromium's screenshots, as a phone would.
APT_PACKAGES=(knot postgresql dovecot-imapd dovecot-pop3d chromium nginx-light wrk openssl
              roundcube-core roundcube-sqlite3 php-fpm php-curl
              mariadb-server slapd ldap-utils libmariadb-dev libldap2-dev libsasl2-dev pkg-config
              systemd procps zbar-tools)

# Install whichever of APT_PACKAGES (and the extra names given) are missing.
ensure_packages() {
  install_missing "${APT_PACKAGES[@]}" "$@"
}

# Install whichever of the named packages are missing.  apt waits for another
# apt on this system instead of failing (scripts/test and scripts/debian13 may
# both install at once).
install_missing() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    # The tests run Roundcube on a database of their own: the package must not
    # try to create one in the system's PostgreSQL (dbconfig-common).
    echo "roundcube-core roundcube/dbconfig-install boolean false" | as_root debconf-set-selections
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

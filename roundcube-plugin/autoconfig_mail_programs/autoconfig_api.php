<?php

/**
 * The autoconfig admin API, as this plugin uses it: read and set one
 * account's IMAP and POP switches.
 *
 * Every call is made by the Roundcube server, never by the browser, so the
 * admin token stays in Roundcube's config.  Every failure (no connection, a
 * timeout, an error status, an answer that is not the expected JSON) becomes
 * an autoconfig_api_error whose kind the page turns into a plain message; a
 * failed call never yields a switch state, so the page can never show one
 * it did not just read.
 */
class autoconfig_api
{
    /** The service cannot be reached or is failing (5xx, 429): nothing was changed. */
    const UNAVAILABLE = 'unavailable';
    /**
     * No usable answer to a request that may have reached the service (a timeout, a
     * connection cut mid-answer, an answer too long): a change may or may not have
     * been made.
     */
    const TIMEOUT = 'timeout';
    /** The switches live in a read-only source (the mail database): 409. */
    const READ_ONLY = 'read_only';
    /** The service does not know this address (a domain it does not serve): 400. */
    const NOT_SERVED = 'not_served';
    /** The plugin or the service is misconfigured (token, URL): 401, 404, anything else. */
    const MISCONFIGURED = 'misconfigured';

    /**
     * The most of an answer that is read.  The switches are a few dozen bytes;
     * a broken or hostile service could otherwise send more than PHP's memory
     * limit, and the page would die instead of showing a message.
     */
    const MAX_ANSWER = 65536;

    /**
     * cURL's errors that prove the request never reached the service: no name, no
     * connection, no TLS session, no such URL.  Only these mean "nothing changed".
     */
    const NOTHING_SENT = [1, 3, 5, 6, 7, 35, 51, 58, 60, 77, 83, 90];

    private $client;
    private $base_url;
    private $token;
    private $actor;
    private $timeout;

    /**
     * @param object $client   A GuzzleHttp\Client (rcube::get_http_client())
     * @param string $base_url The service's base URL as the Roundcube server reaches it
     * @param string $token    An admin token of the service
     * @param string $actor    Recorded by the service as who made each change
     * @param float  $timeout  Seconds one call may take in all (the client's timeout option)
     */
    public function __construct($client, $base_url, $token, $actor, $timeout)
    {
        $this->timeout  = (float) $timeout;
        $this->client   = $client;
        $this->base_url = rtrim($base_url, '/');
        $this->token    = $token;
        $this->actor    = $actor;
    }

    /**
     * The account's switches as the service has them now.
     *
     * @return array ['imap' => bool, 'pop' => bool]
     * @throws autoconfig_api_error
     */
    public function read($address)
    {
        return $this->call('GET', $address, null);
    }

    /**
     * Set both switches; the answer is the state the service stored.
     *
     * @return array ['imap' => bool, 'pop' => bool]
     * @throws autoconfig_api_error
     */
    public function write($address, $imap, $pop)
    {
        return $this->call('PUT', $address, ['imap' => (bool) $imap, 'pop' => (bool) $pop]);
    }

    /**
     * Whether php-curl is there: without it no timeout bounds a whole call.
     */
    public static function has_curl()
    {
        return function_exists('curl_exec') && function_exists('curl_multi_exec');
    }

    private function call($method, $address, $body)
    {
        if (!self::has_curl()) {
            throw new autoconfig_api_error(self::MISCONFIGURED,
                "$method: not called: install php-curl (apt-get install php-curl) and restart PHP-FPM; "
                . 'without it a slow service could hold the webmail\'s PHP workers for ever');
        }

        $options = [
            'headers' => [
                'Authorization'      => 'Bearer ' . $this->token,
                'Accept'             => 'application/json',
                'X-Autoconfig-Actor' => $this->actor,
            ],
            // An error status is an answer to read, not an exception.
            'http_errors'     => false,
            // The admin API never redirects; following one could send the token elsewhere.
            'allow_redirects' => false,
            'sink'            => $this->bounded_sink($overrun),
        ];
        if ($body !== null) {
            $options['json'] = $body;
        }

        $url = $this->base_url . '/admin/v1/accounts/' . rawurlencode($address);

        $started = microtime(true);
        try {
            $response = $this->client->request($method, $url, $options);
        }
        catch (Exception $e) {
            // Connection refused, DNS, TLS, the timeout, a connection cut, or an answer too
            // long or too slow.  Only an error from NOTHING_SENT says nothing changed: a
            // timeout may strike after the request was sent, and a service that dies after
            // reading it (cURL's 52 or 56) may have stored the change.  Without an error
            // number (not cURL), the time it took tells.
            $context = method_exists($e, 'getHandlerContext') ? $e->getHandlerContext() : [];
            $errno = $context['errno'] ?? null;
            if ($errno === null) {
                $unsent = microtime(true) - $started < 0.9 * $this->timeout;
            }
            else {
                $unsent = in_array($errno, self::NOTHING_SENT, true);
            }
            throw new autoconfig_api_error(!$overrun && $unsent ? self::UNAVAILABLE : self::TIMEOUT,
                "$method $url: " . ($overrun ?: $e->getMessage()));
        }

        if ($overrun) {
            // The service answered, too much or too slowly: it may have made the change.
            throw new autoconfig_api_error(self::TIMEOUT, "$method $url: $overrun");
        }

        $status = $response->getStatusCode();
        $text   = (string) $response->getBody();

        if ($status == 200) {
            $data = json_decode($text, true);
            if (!is_array($data) || !is_bool($data['imap'] ?? null) || !is_bool($data['pop'] ?? null)) {
                throw new autoconfig_api_error(self::MISCONFIGURED, "$method $url: 200 without the switches");
            }

            return ['imap' => $data['imap'], 'pop' => $data['pop']];
        }

        $kind = self::MISCONFIGURED;
        if ($status >= 500 || $status == 429) {
            $kind = self::UNAVAILABLE;
        }
        else if ($status == 409) {
            $kind = self::READ_ONLY;
        }
        else if ($status == 400) {
            $kind = self::NOT_SERVED;
        }

        // The service's message names the problem; it never contains the token.  It goes
        // to Roundcube's log as one short line: a broken or compromised service must not
        // write lines of its own there.
        $error = json_decode($text, true);
        $message = is_array($error) && is_string($error['message'] ?? null) ? $error['message'] : $text;
        $message = substr(preg_replace('/[\x00-\x1f\x7f]+/', ' ', $message), 0, 200);

        throw new autoconfig_api_error($kind, "$method $url: $status $message");
    }

    /**
     * Where the answer's body goes: a buffer that takes at most MAX_ANSWER bytes and
     * nothing after the deadline.  Refusing a write stops the transfer (curl aborts,
     * Guzzle's stream handler stops reading), and $overrun then says why.  curl's own
     * timeout bounds the whole call; without php-curl only this deadline bounds the
     * body, and nothing bounds a service that trickles its headers.
     */
    private function bounded_sink(&$overrun)
    {
        $overrun  = null;
        $buffer   = \GuzzleHttp\Psr7\Utils::streamFor(fopen('php://temp', 'r+'));
        $deadline = microtime(true) + $this->timeout;

        return \GuzzleHttp\Psr7\FnStream::decorate($buffer, [
            'write' => function ($data) use ($buffer, $deadline, &$overrun) {
                if ($buffer->getSize() + strlen($data) > self::MAX_ANSWER) {
                    $overrun = 'the answer is longer than ' . self::MAX_ANSWER . ' bytes';
                    return 0;
                }
                if (microtime(true) > $deadline) {
                    $overrun = "the answer took longer than {$this->timeout} s";
                    return 0;
                }

                return $buffer->write($data);
            },
        ]);
    }
}

/**
 * A call to the admin API that did not give a switch state.
 */
class autoconfig_api_error extends Exception
{
    public $kind;

    public function __construct($kind, $detail)
    {
        parent::__construct($detail);
        $this->kind = $kind;
    }
}

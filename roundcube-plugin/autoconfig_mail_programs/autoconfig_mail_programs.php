<?php

/**
 * Mail programs (IMAP and POP): the switches of the autoconfig service, in
 * Roundcube's Settings.
 *
 * At this ISP, IMAP and POP start off for every mailbox, and mail programs
 * get no settings (and, with Dovecot's login hook, no login) until the user
 * turns one on.  This page is where the user does that.  It reads and sets
 * the signed-in user's two switches through autoconfig's admin API:
 *
 * - from the Roundcube server only: the admin token stays in Roundcube's
 *   config and never reaches the browser;
 * - always for the signed-in user's own address, taken from the session,
 *   never from the form;
 * - a save must carry Roundcube's request token (CSRF);
 * - every change names this plugin and the user (X-Autoconfig-Actor);
 * - when the service is down, slow or refuses, the user gets a plain
 *   message and nothing changes, and the page never shows a switch state it
 *   did not just read from the service.
 *
 * Optionally it also forwards the user's own IP address to Dovecot through
 * IMAP ID, so Dovecot's logs and per-IP limits see the user instead of the
 * webmail.  autoconfig's login gate never uses that address: it recognises
 * the webmail by the connection itself ([dovecot] webmail_networks).
 *
 * Configuration: config.inc.php.dist.  Documentation: the README of the
 * autoconfig repository ("The customer's story, set up end to end").
 */

require_once __DIR__ . '/autoconfig_api.php';

class autoconfig_mail_programs extends rcube_plugin
{
    const ACTION      = 'plugin.autoconfig_mail_programs';
    const SAVE_ACTION = 'plugin.autoconfig_mail_programs-save';
    const LOG         = 'autoconfig_mail_programs';

    /** Seconds the service gets by default, and at most (autoconfig_timeout). */
    const DEFAULT_TIMEOUT = 3;
    const MAX_TIMEOUT     = 10;

    /** @var rcmail */
    private $rc;

    function init()
    {
        $this->rc = rcmail::get_instance();
        $this->load_config();

        // At login and whenever Roundcube opens IMAP: tell Dovecot who the user is.
        if ($this->rc->config->get('autoconfig_forward_client_ip')) {
            $this->add_hook('storage_connect', [$this, 'storage_connect']);
        }

        if ($this->rc->task == 'settings') {
            $this->add_texts('localization/');
            $this->add_hook('settings_actions', [$this, 'settings_actions']);
            $this->register_action(self::ACTION, [$this, 'show']);
            $this->register_action(self::SAVE_ACTION, [$this, 'save']);
            $this->include_stylesheet($this->local_skin_path() . '/autoconfig_mail_programs.css');
        }
    }

    /**
     * The entry in Settings' menu, next to Preferences, Folders, Identities.
     */
    function settings_actions($args)
    {
        $args['actions'][] = [
            'action' => self::ACTION,
            'class'  => 'mailprograms',
            'label'  => 'mailprograms',
            'title'  => 'mailprogramstitle',
            'domain' => 'autoconfig_mail_programs',
        ];

        return $args;
    }

    /**
     * Adds x-originating-ip to the IMAP ID Roundcube sends before logging in.
     * Dovecot believes it only from its login_trusted_networks.
     */
    function storage_connect($args)
    {
        $address = rcube_utils::remote_addr();

        if ($address && filter_var($address, FILTER_VALIDATE_IP)) {
            $ident = isset($args['preauth_ident']) && is_array($args['preauth_ident']) ? $args['preauth_ident'] : [];
            $args['preauth_ident'] = $ident + ['x-originating-ip' => $address];
        }

        return $args;
    }

    /**
     * GET: the page with the switches as the service has them right now.
     */
    function show()
    {
        $state = null;
        $error = null;

        try {
            $state = $this->api()->read($this->address());
        }
        catch (autoconfig_api_error $e) {
            $error = $this->failure($e, 'read');
        }

        $this->render($state, $error, null);
    }

    /**
     * POST: set both switches, then show what the service stored.
     */
    function save()
    {
        // Roundcube refuses a POST without its request token before any action
        // runs (rcmail::action_handler); this check keeps the rule in this file
        // too, and refuses an empty POST, which Roundcube lets through.
        $token = rcube_utils::get_input_string('_token', rcube_utils::INPUT_POST);
        if (!is_string($token) || $token === '' || !hash_equals($this->rc->get_request_token(), $token)) {
            $this->log('refused a save without a valid request token');
            $this->render(null, $this->gettext('invalidrequest'), null);
            return;
        }

        // Only the two boxes are read.  Whatever else the form carries
        // (an address, a user name) is ignored: the address is the session's.
        $imap = rcube_utils::get_input_string('_imap', rcube_utils::INPUT_POST) === '1';
        $pop  = rcube_utils::get_input_string('_pop', rcube_utils::INPUT_POST) === '1';
        $address = $this->address();

        try {
            $state = $this->api()->write($address, $imap, $pop);
        }
        catch (autoconfig_api_error $e) {
            $error = $this->failure($e, 'save');
            // Show the switches only if the service can say what they are now,
            // and do not make the user wait a second time for one that is not there.
            $state = null;
            if ($e->kind != autoconfig_api::UNAVAILABLE && $e->kind != autoconfig_api::TIMEOUT) {
                try {
                    $state = $this->api()->read($address);
                }
                catch (autoconfig_api_error $again) {
                    // Nothing read: no switches on the page, only the message.
                }
            }

            $this->render($state, $error, null);
            return;
        }

        $this->log(sprintf('%s set IMAP %s, POP %s', $address, $state['imap'] ? 'on' : 'off', $state['pop'] ? 'on' : 'off'));
        $this->render($state, null, $this->gettext('saved'));
    }

    /**
     * The signed-in user's address: the IMAP login of this session, with the
     * default mail domain added if the login has none.  Never a form field.
     */
    private function address()
    {
        return (string) $this->rc->user->get_username('mail');
    }

    private function api()
    {
        $timeout = $this->timeout();
        $options = ['timeout' => $timeout, 'connect_timeout' => $timeout];

        // curl's timeout bounds the whole call.  Guzzle's fallback (PHP streams, when
        // php-curl is missing) bounds each read only, so a service sending a byte a
        // second would hold this PHP worker for ever: autoconfig_api then refuses to call.
        if (autoconfig_api::has_curl()) {
            $options['handler'] = \GuzzleHttp\HandlerStack::create(new \GuzzleHttp\Handler\CurlHandler());
        }

        if ($ca = $this->rc->config->get('autoconfig_api_ca_file')) {
            $options['verify'] = $ca;
        }

        // Names the plugin and the user; the service accepts 1-64 printable ASCII characters.
        $actor = substr('roundcube:' . rawurlencode($this->address()), 0, 64);

        return new autoconfig_api(
            $this->rc->get_http_client($options),
            (string) $this->rc->config->get('autoconfig_api_url', 'http://127.0.0.1:8080'),
            (string) $this->rc->config->get('autoconfig_api_token', ''),
            $actor,
            $timeout
        );
    }

    /**
     * autoconfig_timeout, kept to what a page can wait: Guzzle reads 0 as "wait
     * forever", and anything near nginx's 60 s would turn the plain message into
     * a gateway error while a PHP worker stays stuck.
     */
    private function timeout()
    {
        $timeout = $this->rc->config->get('autoconfig_timeout', self::DEFAULT_TIMEOUT);
        if (!is_numeric($timeout) || $timeout <= 0) {
            $timeout = self::DEFAULT_TIMEOUT;
        }

        return min((float) $timeout, self::MAX_TIMEOUT);
    }

    /**
     * The user's message for a failed call; the details go to Roundcube's log.
     */
    private function failure(autoconfig_api_error $e, $what)
    {
        rcube::raise_error([
                'code'    => 500,
                'file'    => __FILE__,
                'line'    => __LINE__,
                'message' => "autoconfig_mail_programs: could not $what the switches of "
                    . $this->address() . ': ' . $e->getMessage(),
            ], true, false
        );

        switch ($e->kind) {
        case autoconfig_api::READ_ONLY:
            return $this->gettext('readonly');
        case autoconfig_api::NOT_SERVED:
            return $this->gettext('notserved');
        case autoconfig_api::TIMEOUT:
            return $this->gettext($what == 'save' ? 'notconfirmed' : 'notread');
        default:
            return $this->gettext($what == 'save' ? 'notsaved' : 'notread');
        }
    }

    private function log($line)
    {
        rcube::write_log(self::LOG, $line);
    }

    /**
     * @param array|null  $state   The switches just read or stored, or null: show none
     * @param string|null $error   A message for the user, shown above the form
     * @param string|null $notice  A confirmation, shown above the form
     */
    private function render($state, $error, $notice)
    {
        $this->rc->overwrite_action(self::ACTION);
        $this->rc->output->set_pagetitle($this->gettext('mailprograms'));

        $this->register_handler('plugin.body', function () use ($state, $error, $notice) {
            return $this->body($state, $error, $notice);
        });

        $this->rc->output->send('plugin');
    }

    private function body($state, $error, $notice)
    {
        $content = html::tag('h2', ['class' => 'mailprograms-title'], rcube::Q($this->gettext('mailprogramstitle')))
            . html::p(['class' => 'intro'], rcube::Q($this->gettext('intro')));

        if ($error !== null) {
            $content .= html::div(['class' => 'boxerror', 'id' => 'mailprograms-error', 'role' => 'alert'], rcube::Q($error));
        }

        if ($notice !== null) {
            $content .= html::div(['class' => 'boxconfirmation', 'id' => 'mailprograms-notice', 'role' => 'status'], rcube::Q($notice));
        }

        if ($state !== null) {
            $content .= $this->form($state);
        }

        if ($state !== null && ($state['imap'] || $state['pop'])) {
            $content .= $this->next_step();
        }

        return html::div(['id' => 'prefs-title', 'class' => 'boxtitle'], rcube::Q($this->gettext('mailprogramstitle')))
            . html::div(['class' => 'box formcontainer scroller', 'id' => 'mailprograms'],
                html::div(['class' => 'boxcontent formcontent'], $content)
            );
    }

    private function form($state)
    {
        $table = new html_table(['cols' => 2, 'class' => 'propform']);

        foreach (['imap', 'pop'] as $name) {
            $id = 'mailprograms-' . $name;
            $box = new html_checkbox(['name' => '_' . $name, 'id' => $id, 'value' => '1']);
            $label = $this->gettext($name . 'label');
            $hint = html::div(['class' => 'hint form-text'], rcube::Q($this->gettext($name . 'hint')));

            $table->add('title', html::label($id, rcube::Q($label)));
            $table->add(null, $box->show($state[$name] ? '1' : '') . $hint);
        }

        $button = html::tag('button', [
                'type'  => 'submit',
                'class' => 'button mainaction submit btn btn-primary',
                'id'    => 'mailprograms-save',
            ], rcube::Q($this->gettext('save'))
        );

        return $this->rc->output->form_tag([
                'id'     => 'mailprograms-form',
                'name'   => 'mailprograms-form',
                'method' => 'post',
                'action' => './?_task=settings&_action=' . self::SAVE_ACTION,
            ],
            html::p(['class' => 'recommendation'], rcube::Q($this->gettext('recommendation')))
            . $table->show()
            . html::p(['class' => 'formbuttons'], $button)
        );
    }

    /**
     * After a protocol is on: where the user sets up the mail program.
     */
    private function next_step()
    {
        $setup = (string) $this->rc->config->get('autoconfig_setup_url', '');
        if ($setup === '') {
            return '';
        }

        $url = $setup . (strpos($setup, '?') === false ? '?' : '&') . 'emailaddress=' . rawurlencode($this->address());

        return html::div(['class' => 'nextstep', 'id' => 'mailprograms-next'],
            html::p(null, rcube::Q($this->gettext('nextstep')))
            . html::p(null, html::a(['href' => $url, 'target' => '_blank', 'rel' => 'noopener noreferrer', 'id' => 'mailprograms-setup'],
                rcube::Q($this->gettext('setuplink'))))
        );
    }
}

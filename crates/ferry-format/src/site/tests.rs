use proptest::prelude::*;

use super::*;

const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn full() -> SiteSettings {
    SiteSettings {
        appliance: Some("https://a.example:8443".into()),
        token: Some("tok-1".into()),
        ca_sha256: parse_sha256(PIN),
        debug: Some(false),
        on_failure: Some(FailurePolicy::PowerOff),
        retry_window: Some(Duration::from_secs(900)),
        ip: vec![
            ip::parse_ip("10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3").unwrap(),
            IpSpec::Dhcp {
                iface: Some("eth1".into()),
            },
        ],
        nameservers: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 53)],
    }
}

#[test]
fn round_trips() {
    let only_image_builder = SiteSettings {
        appliance: Some("https://a.example".into()),
        token: Some("tok".into()),
        ip: vec![IpSpec::Dhcp { iface: None }],
        nameservers: vec![Ipv4Addr::new(192, 0, 2, 53)],
        ..Default::default()
    };
    for s in [SiteSettings::default(), only_image_builder, full()] {
        let text = s.to_conf().unwrap();
        assert_eq!(SiteSettings::parse(&text).unwrap(), s, "{text}");
    }
}

#[test]
fn writes_what_image_builder_always_wrote() {
    let s = SiteSettings {
        appliance: Some("https://10.0.2.2:8443".into()),
        token: Some("test-token-42".into()),
        ip: vec![
            ip::parse_ip("10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3").unwrap(),
        ],
        nameservers: vec![Ipv4Addr::new(10, 0, 2, 3)],
        ..Default::default()
    };
    assert_eq!(
        s.to_conf().unwrap(),
        "# Ferry site settings, written by image-builder. Same keys as the kernel\n\
         # command line; a key given on the command line wins over this file.\n\
         ferry.appliance=https://10.0.2.2:8443\n\
         ferry.token=test-token-42\n\
         ip=10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3\n\
         nameserver=10.0.2.3\n"
    );
}

#[test]
fn reads_short_keys_spaces_comments_and_the_last_single_value() {
    let text = "# c\n\n appliance = https://a \ntoken=t\nferry.appliance=https://b\ndebug=yes\n\
                on_failure=reboot\nretry_window=2h\nca_sha256=00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff\n\
                ip=dhcp\nip=eth0:dhcp\nnameserver=192.0.2.1\r\n";
    let s = SiteSettings::parse(text).unwrap();
    assert_eq!(s.appliance.as_deref(), Some("https://b"));
    assert_eq!(s.debug, Some(true));
    assert_eq!(s.on_failure, Some(FailurePolicy::Reboot));
    assert_eq!(s.retry_window, Some(Duration::from_secs(7200)));
    assert_eq!(s.ca_sha256, parse_sha256(PIN));
    assert_eq!(s.ip.len(), 2);
    assert_eq!(s.nameservers, [Ipv4Addr::new(192, 0, 2, 1)]);
}

/// What an error must match.
type Check = Box<dyn Fn(&SiteError) -> bool>;

#[test]
fn hostile_and_bad_input_is_a_typed_error_naming_line_and_key() {
    let long_line = format!("ferry.token={}\n", "x".repeat(MAX_LINE));
    let long_token = format!("ferry.token={}\n", "x".repeat(MAX_TOKEN + 1));
    let many_ns = "nameserver=192.0.2.1\n".repeat(MAX_REPEATED + 1);
    let huge = "#".repeat(MAX_SITE_CONF + 1);
    let value = |line, key, why| move |e: &SiteError| matches!(e, SiteError::Value { line: l, key: k, why: w, .. } if *l == line && *k == key && *w == why);
    let cases: Vec<(&str, Check)> = vec![
        (&huge, Box::new(|e| matches!(e, SiteError::TooLarge { .. }))),
        (
            &long_line,
            Box::new(|e| matches!(e, SiteError::LineTooLong { line: 1, .. })),
        ),
        (
            &long_token,
            Box::new(value(
                1,
                Key::Token,
                ValueError::TooLong {
                    len: MAX_TOKEN + 1,
                    max: MAX_TOKEN,
                },
            )),
        ),
        (
            &many_ns,
            Box::new(value(
                MAX_REPEATED + 1,
                Key::Nameserver,
                ValueError::TooMany { max: MAX_REPEATED },
            )),
        ),
        (
            "# x\n\nbogus line\n",
            Box::new(|e| matches!(e, SiteError::NotKeyValue { line: 3, .. })),
        ),
        (
            "colour=blue\n",
            Box::new(|e| matches!(e, SiteError::UnknownKey { line: 1, key } if key == "colour")),
        ),
        (
            "ferry.applaince=https://a\n",
            Box::new(|e| matches!(e, SiteError::UnknownKey { .. })),
        ),
        (
            "appliance=http://a\n",
            Box::new(value(1, Key::Appliance, ValueError::NotHttps)),
        ),
        (
            "appliance=https:///x\n",
            Box::new(value(1, Key::Appliance, ValueError::NoHost)),
        ),
        (
            "token=\n",
            Box::new(value(1, Key::Token, ValueError::Token)),
        ),
        (
            "token=a\u{7f}b\n",
            Box::new(value(1, Key::Token, ValueError::Token)),
        ),
        (
            "debug=\n",
            Box::new(value(1, Key::Debug, ValueError::NotBool)),
        ),
        (
            "ca_sha256=abc\n",
            Box::new(value(1, Key::CaSha256, ValueError::NotSha256)),
        ),
        (
            "ca_sha256=ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\n",
            Box::new(value(1, Key::CaSha256, ValueError::NotSha256)),
        ),
        (
            "on_failure=panic\n",
            Box::new(value(
                1,
                Key::OnFailure,
                ValueError::UnknownPolicy("panic".into()),
            )),
        ),
        (
            "retry_window=99999999999999999999h\n",
            Box::new(value(1, Key::RetryWindow, ValueError::NotDuration)),
        ),
        (
            "retry_window=é\n",
            Box::new(value(1, Key::RetryWindow, ValueError::NotDuration)),
        ),
        (
            "ip=dhcp\nip=eth0\n",
            Box::new(|e| {
                matches!(
                    e,
                    SiteError::Value {
                        line: 2,
                        key: Key::Ip,
                        why: ValueError::Ip(_),
                        ..
                    }
                )
            }),
        ),
        (
            "nameserver=2001:db8::1\n",
            Box::new(value(
                1,
                Key::Nameserver,
                ValueError::NotIpv4("2001:db8::1".into()),
            )),
        ),
    ];
    for (text, want) in &cases {
        let e = SiteSettings::parse(text).expect_err(text);
        assert!(want(&e), "{:.80}: {e:?}", text);
    }
}

#[test]
fn messages_name_the_file_line_and_syntax_and_never_the_token() {
    let e = SiteSettings::parse("ip=dhcp\nip=eth0\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("fix `ip=eth0` in /etc/ferry/site.conf line 2: unknown method \"eth0\"; expected {IP_SYNTAX}")
    );
    let e = SiteSettings::parse("ferry.token=sec ret\n").unwrap_err();
    assert!(!e.to_string().contains("sec"), "{e}");
    assert!(!format!("{e:?}").contains("sec"), "{e:?}");
    assert!(e.to_string().contains("ferry.token=<redacted>"), "{e}");
    let s = SiteSettings::parse("token=secret\n").unwrap();
    assert!(!format!("{s:?}").contains("secret"));
    assert!(!format!("{:?}", entries("token=secret").unwrap()).contains("secret"));
}

#[test]
fn what_would_not_read_back_is_not_written() {
    let mut s = full();
    s.appliance = Some("https://a\nferry.debug=1".into());
    assert!(matches!(
        s.to_conf().unwrap_err(),
        SiteError::Unfaithful { .. }
    ));
    let mut s = full();
    s.retry_window = Some(Duration::from_millis(1500));
    assert_eq!(
        s.to_conf().unwrap_err(),
        SiteError::Unfaithful {
            key: Key::RetryWindow
        }
    );
    let mut s = full();
    s.token = Some("a b".into());
    assert!(matches!(
        s.to_conf().unwrap_err(),
        SiteError::Value {
            key: Key::Token,
            ..
        }
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(s) = SiteSettings::parse(&text) {
            // What is accepted is in bounds and writes back to itself.
            prop_assert!(s.ip.len() <= MAX_REPEATED && s.nameservers.len() <= MAX_REPEATED);
            let again = s.to_conf().map(|t| SiteSettings::parse(&t));
            prop_assert!(matches!(again, Ok(Ok(ref b)) if *b == s));
        }
    }

    #[test]
    fn key_value_lines_never_panic(
        lines in proptest::collection::vec(
            (prop::sample::select(vec![
                "ferry.appliance", "token", "ca_sha256", "debug", "on_failure", "retry_window",
                "ip", "nameserver", "bogus",
            ]), "[ -~\u{80}-\u{10ffff}]{0,40}"),
            0..12,
        )
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Ok(s) = SiteSettings::parse(&text) {
            let back = s.to_conf().map(|t| SiteSettings::parse(&t));
            prop_assert!(matches!(back, Ok(Ok(ref b)) if *b == s), "{:?}", text);
        }
    }
}

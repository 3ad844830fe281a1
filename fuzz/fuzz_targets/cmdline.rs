//! The rescue image's settings (`ferry_init::settings::parse`): the kernel command line (from a
//! boot menu or an iPXE script fetched over the network) and the stamped site.conf, including
//! dracut-style `ip=` specs, nameservers, the appliance URL and the CA pin. site.conf is also fed
//! to its shared type alone (`ferry_format::site::SiteSettings::parse`, what image-builder
//! writes with), and what that accepts must write back to itself. Input: command line, a NUL
//! byte, then site.conf (absent when there is no NUL).
#![no_main]

use ferry_format::site::SiteSettings;
use ferry_init::settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (cmdline, site) = match text.split_once('\0') {
        Some((c, s)) => (c, Some(s)),
        None => (&*text, None),
    };
    let _ = settings::cmdline_words(cmdline);
    let _ = settings::parse(cmdline, site);
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("ip=") {
            if let Ok(spec) = settings::ip::parse_ip(v) {
                assert_eq!(settings::ip::parse_ip(&spec.to_value()), Ok(spec));
            }
        }
    }
    if let Some(Ok(s)) = site.map(SiteSettings::parse) {
        let written = s.to_conf().expect("accepted settings serialize");
        assert_eq!(SiteSettings::parse(&written), Ok(s));
    }
});

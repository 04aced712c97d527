//! `hark:` links, which place a call after the person confirms it: `hark:call/alice`,
//! `hark:call/alice?video`, `hark:call/alice,bob` (a group). They come as the app's launch
//! argument (the desktop entry's `%u`) and, when Hark already runs, from the second launch that
//! the single-instance plugin turns back into a message to this one.
//!
//! `tel:` links come the same ways once the person lets Hark open them (`tel_links`): a number
//! calls the Hark user whose id is that number (deployments that number their people: extension
//! 4021 is user `4021`). Visual separators (`+`, `-`, `.`, `(`, `)`, spaces) and parameters after
//! `;` or `?` are dropped (RFC 3966); what is left must be digits and a user id.
//!
//! A link is text anyone can put on a web page, so it is read strictly and never starts a call
//! by itself: anything but the forms above is refused with a reason the page shows, and a
//! well-formed one is only offered ("Call alice?").

use hark_protocol::{valid_user_id, Media, UserId};

use crate::api::{CallLink, LinkRefusal, OpenedLink};

/// The longest link read; anything longer is refused unread.
pub const MAX_LINK_BYTES: usize = 1024;

/// The most people one link may call: a group call's nine places, less our own.
pub const MAX_LINK_PEOPLE: usize = 8;

/// The link among a launch's arguments (the first that starts with `hark:` or `tel:`), read.
pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Option<OpenedLink> {
    args.into_iter().find_map(|arg| read(&arg))
}

/// `text` read as a `hark:` or `tel:` link; `None` when it is not one at all (another argument).
pub fn read(text: &str) -> Option<OpenedLink> {
    let text = text.trim();
    let read = match (strip_scheme(text, "hark:"), strip_scheme(text, "tel:")) {
        (Some(rest), _) => parse(text, rest),
        (_, Some(number)) => parse_tel(text, number),
        (None, None) => return None,
    };
    Some(match read {
        Ok(link) => OpenedLink::Call { link },
        Err(reason) => OpenedLink::Refused { reason },
    })
}

/// What follows `scheme` (in any case, with or without `//`), or `None`.
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let start = text.get(..scheme.len())?;
    if !start.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &text[scheme.len()..];
    Some(rest.strip_prefix("//").unwrap_or(rest))
}

/// A `tel:` number as an audio call to the user with that id.
fn parse_tel(whole: &str, number: &str) -> Result<CallLink, LinkRefusal> {
    if whole.len() > MAX_LINK_BYTES {
        return Err(LinkRefusal::TooLong);
    }
    let number = number.split([';', '?']).next().unwrap_or_default().replace("%20", "");
    let digits: String = number.chars().filter(|c| !matches!(c, '+' | '-' | '.' | '(' | ')' | ' ')).collect();
    if digits.is_empty() {
        return Err(LinkRefusal::NoOne);
    }
    if !digits.chars().all(|c| c.is_ascii_digit()) || !valid_user_id(&digits) {
        return Err(LinkRefusal::BadUser);
    }
    Ok(CallLink { to: vec![digits], media: Media::Audio })
}

fn parse(whole: &str, rest: &str) -> Result<CallLink, LinkRefusal> {
    if whole.len() > MAX_LINK_BYTES {
        return Err(LinkRefusal::TooLong);
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some(people) = path.strip_prefix("call/") else { return Err(LinkRefusal::UnknownAction) };
    let media = match query {
        "" | "audio" => Media::Audio,
        "video" => Media::Video,
        _ => return Err(LinkRefusal::UnknownOption),
    };
    let mut to: Vec<UserId> = Vec::new();
    for person in people.trim_end_matches('/').split(',') {
        if !valid_user_id(person) {
            return Err(if person.is_empty() { LinkRefusal::NoOne } else { LinkRefusal::BadUser });
        }
        if !to.iter().any(|known| known == person) {
            to.push(person.to_owned());
        }
    }
    if to.len() > MAX_LINK_PEOPLE {
        return Err(LinkRefusal::TooManyPeople);
    }
    Ok(CallLink { to, media })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(to: &[&str], media: Media) -> Option<OpenedLink> {
        Some(OpenedLink::Call { link: CallLink { to: to.iter().map(|s| s.to_string()).collect(), media } })
    }

    fn refused(reason: LinkRefusal) -> Option<OpenedLink> {
        Some(OpenedLink::Refused { reason })
    }

    #[test]
    fn the_three_forms_are_read() {
        assert_eq!(read("hark:call/alice"), call(&["alice"], Media::Audio));
        assert_eq!(read("hark:call/alice?video"), call(&["alice"], Media::Video));
        assert_eq!(read("hark:call/alice?audio"), call(&["alice"], Media::Audio));
        assert_eq!(read("hark:call/alice,bob.smith,7up"), call(&["alice", "bob.smith", "7up"], Media::Audio));
        // What launchers and browsers make of them: another case, `//`, a trailing slash, spaces.
        assert_eq!(read(" HARK://call/alice/?video\n"), call(&["alice"], Media::Video));
        assert_eq!(read("hark:call/alice,alice"), call(&["alice"], Media::Audio), "a person named twice is called once");
    }

    #[test]
    fn malformed_links_are_refused_with_a_reason() {
        assert_eq!(read("hark:message/alice"), refused(LinkRefusal::UnknownAction));
        assert_eq!(read("hark:"), refused(LinkRefusal::UnknownAction));
        assert_eq!(read("hark:call/"), refused(LinkRefusal::NoOne));
        assert_eq!(read("hark:call/alice,,bob"), refused(LinkRefusal::NoOne));
        assert_eq!(read("hark:call/Alice"), refused(LinkRefusal::BadUser), "user ids are lowercase");
        assert_eq!(read("hark:call/al%20ice"), refused(LinkRefusal::BadUser));
        assert_eq!(read("hark:call/../../etc/passwd"), refused(LinkRefusal::BadUser));
        assert_eq!(read(&format!("hark:call/{}", "x".repeat(33))), refused(LinkRefusal::BadUser), "longer than a user id");
        assert_eq!(read("hark:call/alice?screen"), refused(LinkRefusal::UnknownOption));
        let nine: Vec<String> = (1..=9).map(|n| format!("u{n}")).collect();
        assert_eq!(read(&format!("hark:call/{}", nine.join(","))), refused(LinkRefusal::TooManyPeople));
        assert_eq!(read(&format!("hark:call/{}", nine[..8].join(","))).map(|l| matches!(l, OpenedLink::Call { .. })), Some(true));
        assert_eq!(read(&format!("hark:call/alice?{}", "j".repeat(10 * 1024))), refused(LinkRefusal::TooLong), "10 KB of junk");
        assert_eq!(read(&"\u{fffd}".repeat(4000)), None);
    }

    #[test]
    fn tel_numbers_call_the_user_with_that_number() {
        assert_eq!(read("tel:4021"), call(&["4021"], Media::Audio));
        assert_eq!(read("TEL:+1-555-010-4021"), call(&["15550104021"], Media::Audio));
        assert_eq!(read("tel://(555)%20010.4021;phone-context=example.com"), call(&["5550104021"], Media::Audio));
        assert_eq!(read("tel:4021?call"), call(&["4021"], Media::Audio));
        assert_eq!(read("tel:"), refused(LinkRefusal::NoOne));
        assert_eq!(read("tel:+-()"), refused(LinkRefusal::NoOne));
        assert_eq!(read("tel:alice"), refused(LinkRefusal::BadUser), "a number, not a name");
        assert_eq!(read("tel:*21#"), refused(LinkRefusal::BadUser));
        assert_eq!(read("tel:4021,4022"), refused(LinkRefusal::BadUser), "one number per link");
        assert_eq!(read(&format!("tel:{}", "1".repeat(33))), refused(LinkRefusal::BadUser), "longer than a user id");
        assert_eq!(read(&format!("tel:1;{}", "x".repeat(10 * 1024))), refused(LinkRefusal::TooLong));
        assert_eq!(read("telx:4021"), None);
    }

    #[test]
    fn only_hark_links_among_the_arguments_count() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(from_args(args(&["/usr/bin/hark-desktop"])), None);
        assert_eq!(from_args(args(&["/usr/bin/hark-desktop", "--verbose", "hark:call/bob", "tel:+123"])), call(&["bob"], Media::Audio));
        assert_eq!(from_args(args(&["/usr/bin/hark-desktop", "tel:+123"])), call(&["123"], Media::Audio));
        assert_eq!(from_args(args(&["hark-desktop", "hark"])), None);
        assert_eq!(read("harkx:call/bob"), None);
        assert_eq!(read("é"), None, "a short non-ASCII argument is not cut inside a character");
    }
}

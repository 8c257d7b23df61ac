//! Nexmark events as delimited text lines, the format the Flink comparison reads too
//! (`benches/compare/flink.sh`): one event per line, fields separated by `|`, every event with
//! all 24 columns (those of the other event kinds empty).
//!
//! | # | column | | # | column | | # | column |
//! |---|---|---|---|---|---|---|---|
//! | 0 | event_type (0 person, 1 auction, 2 bid) | | 9 | a_id | | 18 | b_auction |
//! | 1 | date_time (epoch ms) | | 10 | a_item_name | | 19 | b_bidder |
//! | 2 | p_id | | 11 | a_description | | 20 | b_price |
//! | 3 | p_name | | 12 | a_initial_bid | | 21 | b_channel |
//! | 4 | p_email_address | | 13 | a_reserve | | 22 | b_url |
//! | 5 | p_credit_card | | 14 | a_expires (epoch ms) | | 23 | b_extra |
//! | 6 | p_city | | 15 | a_seller | | | |
//! | 7 | p_state | | 16 | a_category | | | |
//! | 8 | p_extra | | 17 | a_extra | | | |
//!
//! The generator never produces `|` or a line break inside a field; [`to_line`] checks it.

use super::model::{Auction, Bid, Event, Person};

/// A line that is not a Nexmark event (or an event that cannot be written as one): names the
/// column or field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEventLine(pub String);

/// Columns per line.
pub const COLUMNS: usize = 24;

fn clean(s: &str) -> Result<&str, BadEventLine> {
    if s.contains(['|', '\n', '\r']) {
        Err(BadEventLine(format!(
            "field {s:?} contains the delimiter or a line break"
        )))
    } else {
        Ok(s)
    }
}

/// The line of `e` (without a line break).
pub fn to_line(e: &Event) -> Result<String, BadEventLine> {
    let mut c: [String; COLUMNS] = Default::default();
    match e {
        Event::Person(p) => {
            c[0] = "0".into();
            c[1] = p.date_time.to_string();
            c[2] = p.id.to_string();
            c[3] = clean(&p.name)?.into();
            c[4] = clean(&p.email_address)?.into();
            c[5] = clean(&p.credit_card)?.into();
            c[6] = clean(&p.city)?.into();
            c[7] = clean(&p.state)?.into();
            c[8] = clean(&p.extra)?.into();
        }
        Event::Auction(a) => {
            c[0] = "1".into();
            c[1] = a.date_time.to_string();
            c[9] = a.id.to_string();
            c[10] = clean(&a.item_name)?.into();
            c[11] = clean(&a.description)?.into();
            c[12] = a.initial_bid.to_string();
            c[13] = a.reserve.to_string();
            c[14] = a.expires.to_string();
            c[15] = a.seller.to_string();
            c[16] = a.category.to_string();
            c[17] = clean(&a.extra)?.into();
        }
        Event::Bid(b) => {
            c[0] = "2".into();
            c[1] = b.date_time.to_string();
            c[18] = b.auction.to_string();
            c[19] = b.bidder.to_string();
            c[20] = b.price.to_string();
            c[21] = clean(&b.channel)?.into();
            c[22] = clean(&b.url)?.into();
            c[23] = clean(&b.extra)?.into();
        }
    }
    Ok(c.join("|"))
}

fn num<T: std::str::FromStr>(f: &[&str], i: usize) -> Result<T, BadEventLine> {
    f[i].parse()
        .map_err(|_| BadEventLine(format!("column {i} is not a number: {:?}", f[i])))
}

/// Parses a line written by [`to_line`].
pub fn parse_line(line: &str) -> Result<Event, BadEventLine> {
    // The columns go into an array on the stack, found in one pass over the bytes: this runs
    // once per event on the hot path (`str::split` with a char pattern cost twice as much;
    // `memchr` gains nothing on lines this short).
    let mut f = [""; COLUMNS];
    let mut n = 0;
    let mut start = 0;
    for (i, b) in line.bytes().enumerate() {
        if b == b'|' {
            if n == COLUMNS - 1 {
                return Err(BadEventLine(format!(
                    "a Nexmark event line has {COLUMNS} columns, this one {}",
                    line.split('|').count()
                )));
            }
            // `|` is ASCII, so both ends are character boundaries.
            f[n] = &line[start..i];
            n += 1;
            start = i + 1;
        }
    }
    f[n] = &line[start..];
    n += 1;
    if n != COLUMNS {
        return Err(BadEventLine(format!(
            "a Nexmark event line has {COLUMNS} columns, this one {n}"
        )));
    }
    let s = |i: usize| f[i].to_string();
    Ok(match f[0] {
        "0" => Event::Person(Person {
            id: num(&f, 2)?,
            name: s(3),
            email_address: s(4),
            credit_card: s(5),
            city: s(6),
            state: s(7),
            date_time: num(&f, 1)?,
            extra: s(8),
        }),
        "1" => Event::Auction(Auction {
            id: num(&f, 9)?,
            item_name: s(10),
            description: s(11),
            initial_bid: num(&f, 12)?,
            reserve: num(&f, 13)?,
            date_time: num(&f, 1)?,
            expires: num(&f, 14)?,
            seller: num(&f, 15)?,
            category: num(&f, 16)?,
            extra: s(17),
        }),
        "2" => Event::Bid(Bid {
            auction: num(&f, 18)?,
            bidder: num(&f, 19)?,
            price: num(&f, 20)?,
            channel: s(21),
            url: s(22),
            date_time: num(&f, 1)?,
            extra: s(23),
        }),
        other => {
            return Err(BadEventLine(format!(
                "unknown event type {other:?} (0 person, 1 auction, 2 bid)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::nexmark::{NexmarkConfig, NexmarkGenerator};

    #[test]
    fn generated_events_survive_a_round_trip() {
        let g = NexmarkGenerator::new(NexmarkConfig::default());
        for n in 0..2000 {
            let e = g.event(n);
            let line = to_line(&e).unwrap();
            assert_eq!(parse_line(&line).unwrap(), e, "{line}");
        }
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(parse_line("2|1").unwrap_err().0.contains("24 columns"));
        assert!(parse_line(&format!("9{}", "|".repeat(23)))
            .unwrap_err()
            .0
            .contains("unknown event type"));
        let mut bad = to_line(&NexmarkGenerator::new(NexmarkConfig::default()).event(5)).unwrap();
        bad = bad.replacen("|", "|x", 1);
        assert!(parse_line(&bad).unwrap_err().0.contains("not a number"));
    }
}

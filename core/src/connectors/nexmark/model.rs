//! The Nexmark data model: the three record kinds of an online auction
//! site (people registering, auctions opening, bids arriving) and the event
//! that carries exactly one of them.
//!
//! Field names and meanings follow the reference Nexmark benchmark so that
//! queries written against it translate directly. Times are epoch
//! milliseconds of *event time* (not wall-clock time).

use serde::{Deserialize, Serialize};

/// A person who joined the auction site; sellers and bidders refer to a
/// person by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Unique person id; dense, starting at the generator's `FIRST_PERSON_ID`.
    pub id: u64,
    /// Full name, "First Last".
    pub name: String,
    /// Email address (random, not necessarily unique).
    pub email_address: String,
    /// Credit card number: four space-separated groups of four digits.
    pub credit_card: String,
    /// US city the person lives in.
    pub city: String,
    /// Two-letter US state code.
    pub state: String,
    /// Event time at which the person registered, epoch milliseconds.
    pub date_time: i64,
    /// Padding that brings the record to its configured average size.
    pub extra: String,
}

/// An item put up for auction by a seller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Unique auction id; dense, starting at the generator's `FIRST_AUCTION_ID`.
    pub id: u64,
    /// Name of the item on sale.
    pub item_name: String,
    /// Free-text description of the item.
    pub description: String,
    /// Opening price.
    pub initial_bid: u64,
    /// Reserve price; always above `initial_bid`.
    pub reserve: u64,
    /// Event time at which the auction opened, epoch milliseconds.
    pub date_time: i64,
    /// Event time at which the auction closes, epoch milliseconds; always
    /// after `date_time`.
    pub expires: i64,
    /// Id of the selling [`Person`].
    pub seller: u64,
    /// Category id of the item.
    pub category: u64,
    /// Padding that brings the record to its configured average size.
    pub extra: String,
}

/// A bid placed by a person on an auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// Id of the [`Auction`] bid on.
    pub auction: u64,
    /// Id of the bidding [`Person`].
    pub bidder: u64,
    /// Offered price.
    pub price: u64,
    /// Referral channel through which the bid arrived.
    pub channel: String,
    /// URL of the page the bid was placed from.
    pub url: String,
    /// Event time of the bid, epoch milliseconds.
    pub date_time: i64,
    /// Padding that brings the record to its configured average size.
    pub extra: String,
}

/// One element of the Nexmark stream: exactly one person, auction or bid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A new person registered.
    Person(Person),
    /// A new auction opened.
    Auction(Auction),
    /// A bid was placed.
    Bid(Bid),
}

impl Event {
    /// Event time of this event (the `date_time` of the inner record), epoch
    /// milliseconds; what a source uses for timestamps and watermarks.
    pub fn timestamp_ms(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_inner_date_time() {
        let person = Event::Person(Person {
            id: 1000,
            name: "Peter Smith".into(),
            email_address: "a@b.com".into(),
            credit_card: "1234 5678 9012 3456".into(),
            city: "Boise".into(),
            state: "ID".into(),
            date_time: 11,
            extra: String::new(),
        });
        let auction = Event::Auction(Auction {
            id: 1000,
            item_name: "x".into(),
            description: "y".into(),
            initial_bid: 1,
            reserve: 2,
            date_time: 22,
            expires: 23,
            seller: 1000,
            category: 10,
            extra: String::new(),
        });
        let bid = Event::Bid(Bid {
            auction: 1000,
            bidder: 1000,
            price: 5,
            channel: "Apple".into(),
            url: "u".into(),
            date_time: 33,
            extra: String::new(),
        });
        assert_eq!(person.timestamp_ms(), 11);
        assert_eq!(auction.timestamp_ms(), 22);
        assert_eq!(bid.timestamp_ms(), 33);
        assert_ne!(person, auction);
    }
}

//! The server's census of a channel's fleet: for each stratum, the sorted positions of its
//! endpoints. It is the input from which [`WaveThresholds`](crate::thresholds::WaveThresholds) are
//! computed; it never leaves the server (endpoints get the thresholds, not the census).

use std::collections::BTreeMap;

use crate::endpoint::{EndpointFacts, Stratum};
use crate::plan::WHOLE_FLEET_PPM;
use crate::position::position;

/// Positions of a channel's endpoints, by stratum, each list sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Census {
    channel: String,
    strata: BTreeMap<Stratum, Vec<u32>>,
}

/// A position outside `[0, 1_000_000)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position} of an endpoint in stratum {stratum} is not below {WHOLE_FLEET_PPM}")]
pub struct PositionOutOfRange {
    /// The stratum.
    pub stratum: Stratum,
    /// The position.
    pub position: u32,
}

impl Census {
    /// An empty census of `channel`.
    #[must_use]
    pub fn new(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
            strata: BTreeMap::new(),
        }
    }

    /// The census of `channel` over `endpoints` (positions computed with
    /// [`position`]; one sort per stratum).
    pub fn from_endpoints<'a>(
        channel: &str,
        endpoints: impl IntoIterator<Item = &'a EndpointFacts>,
    ) -> Self {
        let mut census = Self::new(channel);
        for e in endpoints {
            census
                .strata
                .entry(e.stratum())
                .or_default()
                .push(position(&e.id, channel));
        }
        for positions in census.strata.values_mut() {
            positions.sort_unstable();
        }
        census
    }

    /// Adds one endpoint (keeps its stratum's list sorted).
    pub fn add(&mut self, facts: &EndpointFacts) {
        let p = position(&facts.id, &self.channel);
        let list = self.strata.entry(facts.stratum()).or_default();
        let at = list.partition_point(|&q| q <= p);
        list.insert(at, p);
    }

    /// Adds a position the server already knows (for example from its database).
    pub fn insert_position(
        &mut self,
        stratum: Stratum,
        position: u32,
    ) -> Result<(), PositionOutOfRange> {
        if position >= WHOLE_FLEET_PPM {
            return Err(PositionOutOfRange { stratum, position });
        }
        let list = self.strata.entry(stratum).or_default();
        let at = list.partition_point(|&q| q <= position);
        list.insert(at, position);
        Ok(())
    }

    /// The channel this census is of.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Endpoints counted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.strata.values().map(Vec::len).sum()
    }

    /// Whether no endpoint is counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.strata.values().all(Vec::is_empty)
    }

    /// The strata and their sorted positions, in stratum order.
    pub fn strata(&self) -> impl Iterator<Item = (&Stratum, &[u32])> {
        self.strata.iter().map(|(s, p)| (s, p.as_slice()))
    }

    /// One stratum's sorted positions.
    #[must_use]
    pub fn positions(&self, stratum: &Stratum) -> Option<&[u32]> {
        self.strata.get(stratum).map(Vec::as_slice)
    }
}

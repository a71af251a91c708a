//! sFlow v5.

use super::{Ctx, DecodeError, DecodeOutcome, Exporter, FlowRecord};

pub(super) fn decode(
    _ctx: &mut Ctx<'_>,
    _state: &mut Exporter,
    _d: &[u8],
    _out: &mut Vec<FlowRecord>,
) -> Result<DecodeOutcome, DecodeError> {
    Ok(DecodeOutcome::default())
}

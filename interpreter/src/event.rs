//! An event as the virtual machine sees it: an event type and one value per schema field.

use crate::schema::{cut_to, EventType, FieldType, FieldValue, TypedValues};

/// An event checked against the schema: exactly the event type's field count, every present value
/// of the field's type. The VM evaluates only these.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a, 'b> {
    event_type: EventType,
    values: &'b [FieldValue<'a>],
    /// Whether every text value is within its field's `max_len` (checked once, when the event is
    /// made), so [`Event::get`] need not look the limit up.
    fits: bool,
}

/// Whether every text value of `values` is within its field's `max_len`.
fn fits(event_type: EventType, values: &[FieldValue<'_>]) -> bool {
    values
        .iter()
        .zip(event_type.fields())
        .all(|(v, f)| match v {
            FieldValue::Str(s) => u32::try_from(s.len()).is_ok_and(|n| n <= f.max_len),
            _ => true,
        })
}

/// Why field values do not make an event of the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The number of values differs from the event type's field count.
    #[error("{event_type} events have {expected} fields, {found} values were given", event_type = .event_type.name())]
    FieldCount {
        event_type: EventType,
        expected: u8,
        found: usize,
    },
    /// A value's type differs from its field's.
    #[error("field {field} of {event_type} is {expected}, a {found} value was given", event_type = .event_type.name(), expected = .expected.name(), found = .found.name())]
    FieldType {
        event_type: EventType,
        field: &'static str,
        expected: FieldType,
        found: FieldType,
    },
}

impl<'a, 'b> Event<'a, 'b> {
    /// An event from a typed builder's values (always consistent with the schema).
    pub fn from_typed(values: TypedValues<'a, 'b>) -> Self {
        Event {
            event_type: values.event_type,
            values: values.values,
            fits: fits(values.event_type, values.values),
        }
    }

    /// An event from values in schema order, checked against the schema.
    pub fn new(event_type: EventType, values: &'b [FieldValue<'a>]) -> Result<Self, EventError> {
        let fields = event_type.fields();
        if values.len() != fields.len() {
            return Err(EventError::FieldCount {
                event_type,
                expected: event_type.field_count(),
                found: values.len(),
            });
        }
        for (v, def) in values.iter().zip(fields) {
            if let Some(found) = v.ty() {
                if found != def.ty {
                    return Err(EventError::FieldType {
                        event_type,
                        field: def.name,
                        expected: def.ty,
                        found,
                    });
                }
            }
        }
        Ok(Event {
            event_type,
            values,
            fits: fits(event_type, values),
        })
    }

    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The value of field `index`; `Absent` for an index past the end (which a verified pack never
    /// asks for). A text longer than its field's [`max_len`](crate::FieldDef::max_len) is seen cut
    /// to it at a char boundary, as the sensor's event builders cut it, so no evaluation reads more
    /// than the cost model assumes.
    pub fn get(&self, index: u8) -> FieldValue<'a> {
        match self.values.get(usize::from(index)).copied() {
            Some(FieldValue::Str(s)) if !self.fits => {
                FieldValue::Str(cut_to(s, self.event_type.max_len(index)))
            }
            Some(v) => v,
            None => FieldValue::Absent,
        }
    }

    /// All values, in schema order.
    pub fn values(&self) -> &'b [FieldValue<'a>] {
        self.values
    }
}

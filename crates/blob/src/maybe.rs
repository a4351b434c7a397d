//! [`Maybe`]: a field that can be absent, `null`, or a value — the three states a lossless JSON model must keep apart.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON object member that may be missing, explicitly `null`, or present with a value.
///
/// Graph sends all three (`"subject": null` is not the same document as no `subject`), so a lossless model cannot use
/// `Option<T>`. Use it with `#[serde(default, skip_serializing_if = "Maybe::is_absent")]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Maybe<T> {
    /// The member is not in the object.
    #[default]
    Absent,
    /// The member is present with the value `null`.
    Null,
    /// The member is present with a value.
    Value(T),
}

impl<T> Maybe<T> {
    /// True when the member is not in the object (used by `skip_serializing_if`).
    pub fn is_absent(&self) -> bool {
        matches!(self, Maybe::Absent)
    }

    /// The value, if there is one.
    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Maybe::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The value, mutably, if there is one.
    pub fn as_mut(&mut self) -> Option<&mut T> {
        match self {
            Maybe::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The value, consuming `self`.
    pub fn into_option(self) -> Option<T> {
        match self {
            Maybe::Value(v) => Some(v),
            _ => None,
        }
    }

    /// True when the member is present, even as `null`.
    pub fn is_present(&self) -> bool {
        !self.is_absent()
    }
}

impl<T> From<T> for Maybe<T> {
    fn from(value: T) -> Self {
        Maybe::Value(value)
    }
}

impl<T> From<Option<T>> for Maybe<T> {
    /// `None` becomes `null` (present): use [`Maybe::Absent`] explicitly to leave a member out.
    fn from(value: Option<T>) -> Self {
        value.map_or(Maybe::Null, Maybe::Value)
    }
}

impl<T: Serialize> Serialize for Maybe<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Maybe::Value(v) => v.serialize(serializer),
            // `Absent` is skipped by `skip_serializing_if`; if a caller forgets that, `null` is the closest JSON.
            Maybe::Null | Maybe::Absent => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only called when the member is present (absent members take the `Default`).
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Maybe::Null, Maybe::Value))
    }
}

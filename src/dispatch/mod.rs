//! Incidents and cross-department orders as pure state machines, with the role ×
//! action permission matrix (deny by default). Every accepted command becomes an
//! [`Event`] with who, when and what; the durable log and delivery build on these.
//!
//! Incident: reported → verified → dispatched → on scene → resolved → closed.
//! Order: issued → delivered → acknowledged (signed for) → in progress → done, or
//! rejected, or overdue → escalated to the superior level.

use serde::{Deserialize, Serialize};

pub mod alerts;
pub mod bench;
pub mod book;
pub mod config;
pub mod delivery;
pub mod dispatcher;
#[cfg(test)]
mod hall_tests;
pub mod ops;
pub mod past;
pub mod recommend;
pub mod service;
#[cfg(test)]
pub(crate) mod testing;
pub mod users;
pub mod worker;

/// Text from people, departments and feeds as it may be stored and shown: control
/// characters (line breaks included) become spaces and bidirectional marks, overrides
/// and isolates are removed, so a name or note cannot forge lines in the log and the
/// timeline or show reversed text (U+202E).
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{061C}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2069}'
                    | '\u{FEFF}'
            )
        })
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Who may do what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Dispatcher,
    Leader,
    DepartmentLiaison,
    /// Zhongshu itself: the clock (overdue, escalation), delivery confirmations and
    /// alerts from feeds. No person signs in with this role.
    System,
}

impl Role {
    /// The roles people sign in with.
    pub const PEOPLE: [Role; 4] = [
        Role::Operator,
        Role::Dispatcher,
        Role::Leader,
        Role::DepartmentLiaison,
    ];
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Dispatcher,
        Role::Leader,
        Role::DepartmentLiaison,
        Role::System,
    ];

    /// The role named `name` ([`Role::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Dispatcher => "dispatcher",
            Role::Leader => "leader",
            Role::DepartmentLiaison => "department_liaison",
            Role::System => "system",
        }
    }
}

/// Everything a person can ask the dispatch core to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ReportIncident,
    VerifyIncident,
    DispatchIncident,
    MarkOnScene,
    ResolveIncident,
    CloseIncident,
    IssueOrder,
    RecordDelivery,
    AcknowledgeOrder,
    StartOrder,
    CompleteOrder,
    RejectOrder,
    UrgeOrder,
    EscalateOrder,
    /// Withdraw an order that is no longer needed (its incident resolved or closed).
    CancelOrder,
    /// A remark on an incident's timeline.
    AddNote,
}

impl Action {
    pub const ALL: [Action; 16] = [
        Action::ReportIncident,
        Action::VerifyIncident,
        Action::DispatchIncident,
        Action::MarkOnScene,
        Action::ResolveIncident,
        Action::CloseIncident,
        Action::IssueOrder,
        Action::RecordDelivery,
        Action::AcknowledgeOrder,
        Action::StartOrder,
        Action::CompleteOrder,
        Action::RejectOrder,
        Action::UrgeOrder,
        Action::EscalateOrder,
        Action::CancelOrder,
        Action::AddNote,
    ];
}

/// The permission matrix. Anything not listed is denied. Leaders watch, read-only.
/// Dispatchers record sign-for and progress by hand only for departments without an
/// endpoint (the dispatch book checks that); department liaisons act on their own
/// department's orders only, and mark on scene or add notes only on incidents their
/// department has an order for (the book checks that too).
pub fn is_allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Operator => matches!(
            action,
            ReportIncident | VerifyIncident | MarkOnScene | AddNote
        ),
        Role::Dispatcher => matches!(
            action,
            ReportIncident
                | VerifyIncident
                | DispatchIncident
                | MarkOnScene
                | ResolveIncident
                | CloseIncident
                | IssueOrder
                | RecordDelivery
                | AcknowledgeOrder
                | StartOrder
                | CompleteOrder
                | RejectOrder
                | UrgeOrder
                | EscalateOrder
                | CancelOrder
                | AddNote
        ),
        Role::Leader => false,
        Role::DepartmentLiaison => matches!(
            action,
            AcknowledgeOrder | StartOrder | CompleteOrder | RejectOrder | MarkOnScene | AddNote
        ),
        Role::System => matches!(
            action,
            ReportIncident
                | RecordDelivery
                | UrgeOrder
                | EscalateOrder
                | CloseIncident
                | CancelOrder
                | AddNote
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Reported,
    Verified,
    Dispatched,
    OnScene,
    Resolved,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Issued,
    Delivered,
    Acknowledged,
    InProgress,
    Done,
    Rejected,
    Overdue,
    Escalated,
    /// Withdrawn because its incident was resolved or closed.
    Cancelled,
}

/// A transition the state machine refuses, with both ends named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action:?} an incident that is {from:?}")]
    Incident {
        from: IncidentStatus,
        action: Action,
    },
    #[error("cannot {action:?} an order that is {from:?}")]
    Order { from: OrderStatus, action: Action },
}

impl IncidentStatus {
    /// The status in words, English and Chinese.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reported => "reported 已上报",
            Self::Verified => "verified 已核实",
            Self::Dispatched => "dispatched 已派遣",
            Self::OnScene => "on scene 已到场",
            Self::Resolved => "resolved 已办结",
            Self::Closed => "closed 已关闭",
        }
    }

    /// The status after `action`, or why not.
    pub fn after(self, action: Action) -> Result<IncidentStatus, TransitionError> {
        use IncidentStatus::*;
        let next = match (self, action) {
            (Reported, Action::VerifyIncident) => Verified,
            (Verified, Action::DispatchIncident) => Dispatched,
            (Dispatched, Action::MarkOnScene) => OnScene,
            (OnScene | Dispatched, Action::ResolveIncident) => Resolved,
            // A false alarm can be closed straight after verification fails.
            (Resolved | Reported, Action::CloseIncident) => Closed,
            _ => return Err(TransitionError::Incident { from: self, action }),
        };
        Ok(next)
    }
}

impl OrderStatus {
    /// The status in words, English and Chinese.
    pub fn label(self) -> &'static str {
        match self {
            Self::Issued => "issued 已下达",
            Self::Delivered => "delivered 已送达",
            Self::Acknowledged => "acknowledged 已签收",
            Self::InProgress => "in progress 处置中",
            Self::Done => "done 完成",
            Self::Rejected => "rejected 拒绝",
            Self::Overdue => "overdue 超时",
            Self::Escalated => "escalated 已升级",
            Self::Cancelled => "cancelled 已撤销",
        }
    }

    /// The status after `action`, or why not. `Overdue` is reached by the clock (see
    /// [`OrderStatus::on_deadline`]), not by a person.
    pub fn after(self, action: Action) -> Result<OrderStatus, TransitionError> {
        use OrderStatus::*;
        let next = match (self, action) {
            (Issued, Action::RecordDelivery) => Delivered,
            // The confirmation of a delivery that finished after the deadline: the
            // department has the order, which stays overdue until signed for.
            (Overdue, Action::RecordDelivery) => Overdue,
            (Issued | Delivered | Overdue, Action::AcknowledgeOrder) => Acknowledged,
            // A department that signs for late may still carry the order out.
            (Acknowledged | Overdue, Action::StartOrder) => InProgress,
            (InProgress | Acknowledged | Overdue, Action::CompleteOrder) => Done,
            (Issued | Delivered | Acknowledged | Overdue, Action::RejectOrder) => Rejected,
            (Overdue | Rejected, Action::EscalateOrder) => Escalated,
            // Urging changes nothing but is recorded, for any order not finished.
            (s @ (Issued | Delivered | Acknowledged | InProgress | Overdue), Action::UrgeOrder) => {
                s
            }
            (Issued | Delivered | Acknowledged | InProgress | Overdue, Action::CancelOrder) => {
                Cancelled
            }
            _ => return Err(TransitionError::Order { from: self, action }),
        };
        Ok(next)
    }

    /// Whether the department has signed for the order (and may be working on it).
    pub fn is_signed_for(self) -> bool {
        matches!(self, OrderStatus::Acknowledged | OrderStatus::InProgress)
    }

    /// Whether the order still waits for the department or the dispatcher: open, or
    /// overdue and not yet signed for. Closing its incident cancels these.
    pub fn is_pending(self) -> bool {
        self.is_open() || self == OrderStatus::Overdue
    }

    /// Whether the order is still open (its deadline still matters).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            OrderStatus::Issued
                | OrderStatus::Delivered
                | OrderStatus::Acknowledged
                | OrderStatus::InProgress
        )
    }

    /// The status once the deadline has passed: orders not signed for become overdue
    /// (and escalate if they stay unsigned); signed-for orders keep their status (the
    /// department is urged, the order is never taken away from it).
    pub fn on_deadline(self) -> Option<OrderStatus> {
        match self {
            OrderStatus::Issued | OrderStatus::Delivered => Some(OrderStatus::Overdue),
            OrderStatus::Acknowledged | OrderStatus::InProgress => Some(self),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_lifecycle_legal_and_illegal() {
        use IncidentStatus::*;
        let path = [
            (Reported, Action::VerifyIncident, Verified),
            (Verified, Action::DispatchIncident, Dispatched),
            (Dispatched, Action::MarkOnScene, OnScene),
            (OnScene, Action::ResolveIncident, Resolved),
            (Resolved, Action::CloseIncident, Closed),
            (Dispatched, Action::ResolveIncident, Resolved),
            (Reported, Action::CloseIncident, Closed),
        ];
        for (from, action, to) in path {
            assert_eq!(from.after(action), Ok(to), "{from:?} --{action:?}-->");
        }
        // Everything else is refused, naming both ends.
        let legal: Vec<_> = path.iter().map(|(f, a, _)| (*f, *a)).collect();
        for from in [Reported, Verified, Dispatched, OnScene, Resolved, Closed] {
            for action in Action::ALL {
                if !legal.contains(&(from, action)) {
                    let err = from.after(action).unwrap_err();
                    assert!(err.to_string().contains(&format!("{from:?}")), "{err}");
                }
            }
        }
    }

    #[test]
    fn order_lifecycle_legal_and_illegal() {
        use OrderStatus::*;
        let legal = [
            (Issued, Action::RecordDelivery, Delivered),
            (Issued, Action::AcknowledgeOrder, Acknowledged),
            (Delivered, Action::AcknowledgeOrder, Acknowledged),
            (Overdue, Action::AcknowledgeOrder, Acknowledged),
            (Acknowledged, Action::StartOrder, InProgress),
            (Overdue, Action::StartOrder, InProgress),
            (InProgress, Action::CompleteOrder, Done),
            (Acknowledged, Action::CompleteOrder, Done),
            (Overdue, Action::CompleteOrder, Done),
            (Issued, Action::RejectOrder, Rejected),
            (Delivered, Action::RejectOrder, Rejected),
            (Acknowledged, Action::RejectOrder, Rejected),
            (Overdue, Action::RejectOrder, Rejected),
            (Overdue, Action::EscalateOrder, Escalated),
            (Rejected, Action::EscalateOrder, Escalated),
            (Issued, Action::UrgeOrder, Issued),
            (Delivered, Action::UrgeOrder, Delivered),
            (Acknowledged, Action::UrgeOrder, Acknowledged),
            (InProgress, Action::UrgeOrder, InProgress),
            (Overdue, Action::UrgeOrder, Overdue),
            (Overdue, Action::RecordDelivery, Overdue),
            (Issued, Action::CancelOrder, Cancelled),
            (Delivered, Action::CancelOrder, Cancelled),
            (Acknowledged, Action::CancelOrder, Cancelled),
            (InProgress, Action::CancelOrder, Cancelled),
            (Overdue, Action::CancelOrder, Cancelled),
        ];
        for (from, action, to) in legal {
            assert_eq!(from.after(action), Ok(to), "{from:?} --{action:?}-->");
        }
        let pairs: Vec<_> = legal.iter().map(|(f, a, _)| (*f, *a)).collect();
        for from in [
            Issued,
            Delivered,
            Acknowledged,
            InProgress,
            Done,
            Rejected,
            Overdue,
            Escalated,
            Cancelled,
        ] {
            for action in Action::ALL {
                if !pairs.contains(&(from, action)) {
                    assert!(
                        from.after(action).is_err(),
                        "{from:?} --{action:?}--> should be refused"
                    );
                }
            }
        }
        // The clock makes unsigned orders overdue, keeps signed-for ones with their
        // department, and leaves finished ones alone.
        assert_eq!(Issued.on_deadline(), Some(Overdue));
        assert_eq!(Delivered.on_deadline(), Some(Overdue));
        assert_eq!(InProgress.on_deadline(), Some(InProgress));
        assert_eq!(Acknowledged.on_deadline(), Some(Acknowledged));
        assert_eq!(Cancelled.on_deadline(), None);
        assert_eq!(Done.on_deadline(), None);
        assert_eq!(Escalated.on_deadline(), None);
    }

    #[test]
    fn permission_matrix_denies_by_default() {
        use Action::*;
        let expected: &[(Role, &[Action])] = &[
            (
                Role::Operator,
                &[ReportIncident, VerifyIncident, MarkOnScene, AddNote],
            ),
            (
                Role::Dispatcher,
                &[
                    ReportIncident,
                    VerifyIncident,
                    DispatchIncident,
                    MarkOnScene,
                    ResolveIncident,
                    CloseIncident,
                    IssueOrder,
                    RecordDelivery,
                    AcknowledgeOrder,
                    StartOrder,
                    CompleteOrder,
                    RejectOrder,
                    UrgeOrder,
                    EscalateOrder,
                    CancelOrder,
                    AddNote,
                ],
            ),
            // Leaders see everything and change nothing.
            (Role::Leader, &[]),
            (
                Role::DepartmentLiaison,
                &[
                    AcknowledgeOrder,
                    StartOrder,
                    CompleteOrder,
                    RejectOrder,
                    MarkOnScene,
                    AddNote,
                ],
            ),
            (
                Role::System,
                &[
                    ReportIncident,
                    RecordDelivery,
                    UrgeOrder,
                    EscalateOrder,
                    CloseIncident,
                    CancelOrder,
                    AddNote,
                ],
            ),
        ];
        // The full matrix, cell by cell.
        for (role, allowed) in expected {
            for action in Action::ALL {
                assert_eq!(
                    is_allowed(*role, action),
                    allowed.contains(&action),
                    "{role:?} × {action:?}"
                );
            }
        }
        assert_eq!(expected.len(), Role::ALL.len());
    }

    #[test]
    fn text_is_cleaned_of_controls_and_bidi_overrides() {
        assert_eq!(
            clean_text("Li Wei\n2026-11-29 zhongshu: closed\u{202E}cba"),
            "Li Wei 2026-11-29 zhongshu: closedcba"
        );
        assert_eq!(clean_text("王芳 \u{2067}x\u{2069}"), "王芳 x");
        assert_eq!(clean_text("plain"), "plain");
        assert_eq!(clean_text("a\u{2028}b\u{200B}c\u{FEFF}"), "a bc");
    }
}

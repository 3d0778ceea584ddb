//! The pivot as a DataFusion operator: [`PivotTable`] is a chunk's wide
//! rows as a table whose schema pass one gave (the chunk's channels with
//! their kinds), and [`PivotExec`] is its physical plan, which runs pass
//! two when it is executed. A SQL stage after the pivot reads the table as
//! `input`, so its query is planned over `PivotExec` in one DataFusion
//! plan (projections and filters above it, the columns the query does not
//! read left out of the batches).
//!
//! Why a table and not a logical node: a chunk's channels are known only
//! once its readings are read (pass one), and DataFusion needs a schema
//! when it plans. A table provider built after pass one gives the planner
//! exactly that schema; a user-defined logical node would still need the
//! data before planning, so it would add a planner extension without
//! changing when anything is known.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures_util::StreamExt;

use super::pending::Pending;

/// What pass two needs, taken by the one execution.
type Shared = Arc<Mutex<Option<Pending>>>;

/// One chunk's wide rows, as a table.
pub struct PivotTable {
    schema: SchemaRef,
    pending: Shared,
}

impl fmt::Debug for PivotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PivotTable({} columns)", self.schema.fields().len())
    }
}

impl PivotTable {
    /// The chunk's readings after pass one; the counts go into its notes
    /// once pass two has run.
    pub(crate) fn new(pending: Pending) -> Self {
        PivotTable {
            schema: pending.schema(),
            pending: Arc::new(Mutex::new(Some(pending))),
        }
    }
}

#[async_trait]
impl TableProvider for PivotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PivotExec::new(
            self.schema.clone(),
            projection.cloned(),
            self.pending.clone(),
        )?))
    }
}

/// Pass two of one chunk, one partition, its wide rows in index order.
pub struct PivotExec {
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
    pending: Shared,
}

impl fmt::Debug for PivotExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PivotExec")
    }
}

impl PivotExec {
    fn new(table: SchemaRef, projection: Option<Vec<usize>>, pending: Shared) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(table.project(p)?),
            None => table.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            // Every wide row needs the whole chunk: nothing before the end.
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(PivotExec {
            projection,
            properties: Arc::new(properties),
            pending,
        })
    }
}

impl DisplayAs for PivotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PivotExec: {} wide columns",
            self.properties.eq_properties.schema().fields().len()
        )
    }
}

impl ExecutionPlan for PivotExec {
    fn name(&self) -> &str {
        "PivotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "PivotExec has one partition, asked for {partition}"
            )));
        }
        let pending = self
            .pending
            .lock()
            .expect("no panic while holding the lock")
            .take();
        let projection = self.projection.clone();
        let schema = self.properties.eq_properties.schema().clone();
        let wide = futures_util::stream::once(async move {
            let Some(pending) = pending else {
                return Err(DataFusionError::Internal(
                    "a chunk's pivot was executed twice; this is a bug in etl".into(),
                ));
            };
            pending
                .fill(projection.as_deref())
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })
        .flat_map(|wide: Result<Vec<RecordBatch>>| {
            let slices: Vec<Result<RecordBatch>> = match wide {
                Err(e) => vec![Err(e)],
                Ok(slices) => slices.into_iter().map(Ok).collect(),
            };
            futures_util::stream::iter(slices)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, wide)))
    }
}

//! The input guard of the one parse: it sees every YAML event before the tree is built
//! and stops the parse at the first node nested deeper than [`MAX_DEPTH`], or once aliases
//! would expand the document past [`MAX_EXPANDED_NODES`] nodes (an alias is a copy of what it
//! names). It keeps counts only, and never recurses.

use std::collections::HashMap;

use saphyr_parser::Event;

/// How deep collections may nest in a service file. The deepest the format uses is 6
/// (`services[0].check.status[0]`); 64 leaves room for anything YAML-shaped and keeps every
/// recursive parser far from the end of its stack.
pub const MAX_DEPTH: usize = 64;

/// How many nodes (scalars, lists, mappings) a service file may have once every alias is
/// expanded. 1000 services x 16 backends are about 150,000.
pub const MAX_EXPANDED_NODES: u64 = 2_000_000;

/// Depth and alias expansion so far (see [`MAX_DEPTH`], [`MAX_EXPANDED_NODES`]).
#[derive(Default)]
pub(crate) struct Guard {
    depth: usize,
    /// Nodes so far, counting an alias as the nodes of what it names.
    nodes: u64,
    /// Anchored collections being read: (anchor id, `nodes` at their start, `depth` there).
    open: Vec<(usize, u64, usize)>,
    /// Anchor id -> (nodes, depth below it) of its subtree.
    anchors: HashMap<usize, (u64, usize)>,
    /// The deepest `depth` reached inside each open anchored collection (parallel to `open`).
    deepest: Vec<usize>,
}

impl Guard {
    pub(crate) fn event(&mut self, ev: &Event<'_>) -> Result<(), String> {
        match ev {
            Event::Scalar(_, _, anchor, _) => {
                self.add(1)?;
                if *anchor > 0 {
                    self.anchors.insert(*anchor, (1, 0));
                }
            }
            Event::Alias(anchor) => {
                let (nodes, below) = self.anchors.get(anchor).copied().unwrap_or((1, 0));
                self.add(nodes)?;
                self.reach(self.depth + below)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.add(1)?;
                self.depth += 1;
                self.reach(self.depth)?;
                if *anchor > 0 {
                    self.open.push((*anchor, self.nodes - 1, self.depth));
                    self.deepest.push(self.depth);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(&(anchor, start, depth)) = self.open.last()
                    && depth == self.depth
                {
                    self.open.pop();
                    let deepest = self.deepest.pop().unwrap_or(depth);
                    self.anchors
                        .insert(anchor, (self.nodes - start, deepest + 1 - depth));
                }
                self.depth = self.depth.saturating_sub(1);
            }
            _ => {}
        }
        Ok(())
    }

    fn add(&mut self, nodes: u64) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_EXPANDED_NODES {
            return Err(format!(
                "the document has more than {MAX_EXPANDED_NODES} nodes once its aliases (`*name`) \
                 are expanded, the limit; write the values out, or use fewer aliases of large \
                 anchors"
            ));
        }
        Ok(())
    }

    /// A node at nesting depth `depth` was seen.
    fn reach(&mut self, depth: usize) -> Result<(), String> {
        for d in &mut self.deepest {
            *d = (*d).max(depth);
        }
        if depth > MAX_DEPTH {
            return Err(Guard::too_deep());
        }
        Ok(())
    }

    pub(crate) fn too_deep() -> String {
        format!(
            "lists and mappings are nested more than {MAX_DEPTH} deep here, the limit; a service \
             file needs at most 6 levels: check the indentation and the brackets"
        )
    }
}

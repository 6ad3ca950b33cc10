// Word-level diff of the draft against the agent's text, shown live while the agent edits (LCS over words).

export function wordDiff(before, after) {
  const a = before.split(/\s+/).filter(Boolean);
  const b = after.split(/\s+/).filter(Boolean);
  // lengths[i][j]: longest common subsequence of a[i:] and b[j:]
  const lengths = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i][j] = a[i] === b[j] ? lengths[i + 1][j + 1] + 1 : Math.max(lengths[i + 1][j], lengths[i][j + 1]);
    }
  }
  const ops = [];
  const push = (op, word) => {
    const last = ops[ops.length - 1];
    if (last && last.op === op) last.words.push(word);
    else ops.push({ op, words: [word] });
  };
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      push("equal", a[i]);
      i++;
      j++;
    } else if (lengths[i + 1][j] >= lengths[i][j + 1]) {
      push("delete", a[i++]);
    } else {
      push("insert", b[j++]);
    }
  }
  while (i < a.length) push("delete", a[i++]);
  while (j < b.length) push("insert", b[j++]);
  return ops;
}

const TAG = { equal: "span", delete: "del", insert: "ins" };

export function renderDiff(container, ops) {
  container.replaceChildren();
  ops.forEach((run, index) => {
    if (index > 0) container.append(" ");
    const node = document.createElement(TAG[run.op]);
    node.textContent = run.words.join(" ");
    if (run.op !== "equal") node.className = `diff-${run.op}`;
    container.append(node);
  });
  if (!ops.some((run) => run.op !== "equal")) {
    container.append(document.createElement("br"));
    const same = document.createElement("em");
    same.textContent = "(no changes: this would be an approval)";
    container.append(same);
  }
}

export function WorkflowList() {
  return <div>WorkflowList</div>;
}

export function ExecutionList() {
  return <div>ExecutionList</div>;
}

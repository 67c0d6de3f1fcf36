// The run pages are papermill's executed copies in book/runs/, which are not in the
// repository: point their "launch in Colab" button at the source notebook in notebooks/.
// (book/runs/<method>-<dataset>.ipynb comes from notebooks/<method>.ipynb as well.)
document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll('a[href*="colab.research.google.com/github/"]')) {
    a.href = a.href.replace(/\/book\/runs\/([a-z]+)(-[\w]+)?\.ipynb$/, "/notebooks/$1.ipynb");
  }
});

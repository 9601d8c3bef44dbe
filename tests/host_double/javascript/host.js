// Host JS globals an extension relies on (A18 script.js:1-110, javascript/ui.js:21-83,
// javascript/progressbar.js:68-140), reduced to their observable behaviour.
var opts = {};
var uiUpdateCallbacks = [], uiAfterUpdateCallbacks = [], uiLoadedCallbacks = [], uiTabChangeCallbacks = [];
var uiCurrentTab = null, uiAfterUpdateTimeout = null;

function gradioApp() {
    var elems = document.getElementsByTagName('gradio-app');
    var elem = elems.length == 0 ? document : elems[0];
    if (elem !== document) elem.getElementById = function(id) { return document.getElementById(id); };
    return elem.shadowRoot ? elem.shadowRoot : elem;
}
function get_uiCurrentTab() { return gradioApp().querySelector('#tabs > .tab-nav > button.selected'); }
function get_uiCurrentTabContent() {
    return Array.from(gradioApp().querySelectorAll('#tabs > .tabitem')).find(function(t) {
        return t.style.display !== 'none' && t.offsetParent !== null;
    }) || null;
}
function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
function onUiTabChange(callback) { uiTabChangeCallbacks.push(callback); }
function onOptionsChanged(callback) {}
function executeCallbacks(queue, arg) { queue.forEach(function(cb) { try { cb(arg); } catch (e) { console.error(e); } }); }

var executedOnLoaded = false;
document.addEventListener('DOMContentLoaded', function() {
    new MutationObserver(function(m) {
        if (!executedOnLoaded && gradioApp().querySelector('#txt2img_prompt')) {
            executedOnLoaded = true;
            executeCallbacks(uiLoadedCallbacks);
        }
        executeCallbacks(uiUpdateCallbacks, m);
        var newTab = get_uiCurrentTab();
        if (newTab && newTab !== uiCurrentTab) { uiCurrentTab = newTab; executeCallbacks(uiTabChangeCallbacks); }
        clearTimeout(uiAfterUpdateTimeout);
        uiAfterUpdateTimeout = setTimeout(function() { executeCallbacks(uiAfterUpdateCallbacks); }, 200);
    }).observe(gradioApp(), {childList: true, subtree: true});
});

function randomId() {
    return "task(" + Math.random().toString(36).slice(2, 7) + Math.random().toString(36).slice(2, 7) + ")";
}

function request(url, data, handler, errorHandler) {
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url, true);
    xhr.setRequestHeader("Content-Type", "application/json");
    xhr.onreadystatechange = function() {
        if (xhr.readyState === 4) {
            if (xhr.status === 200) handler(JSON.parse(xhr.responseText)); else errorHandler();
        }
    };
    xhr.send(JSON.stringify(data));
}

// the host inserts a .progressDiv before progressbarContainer and polls /internal/progress until completed
function requestProgress(id_task, progressbarContainer, gallery, atEnd, onProgress, inactivityTimeout) {
    var divProgress = document.createElement('div');
    divProgress.className = 'progressDiv';
    divProgress.id = 'progress_' + id_task;
    var divInner = document.createElement('div');
    divInner.className = 'progress';
    divProgress.appendChild(divInner);
    if (progressbarContainer && progressbarContainer.parentNode) {
        progressbarContainer.parentNode.insertBefore(divProgress, progressbarContainer);
    }
    window.hostProgressSeen = window.hostProgressSeen || [];
    var done = function() { divProgress.remove(); if (atEnd) atEnd(); };
    var poll = function() {
        request("./internal/progress", {id_task: id_task, id_live_preview: -1, live_preview: false}, function(res) {
            if (res.completed) { done(); return; }
            if (res.progress != null) {
                window.hostProgressSeen.push({progress: res.progress, textinfo: res.textinfo});
                divInner.style.width = Math.round(res.progress * 100) + '%';
                divInner.textContent = (res.textinfo && res.textinfo.indexOf('\n') < 0) ? res.textinfo : '';
            }
            if (onProgress) onProgress(res);
            setTimeout(poll, 300);
        }, done);
    };
    setTimeout(poll, 0);
}

function selected_gallery_index() {
    var tab = get_uiCurrentTabContent();
    if (!tab) return -1;
    var items = Array.from(tab.querySelectorAll('div[id$=_gallery] .thumbnail-item'));
    return items.findIndex(function(e) { return e.classList.contains('selected'); });
}

function extract_image_from_gallery(gallery) {
    if (!gallery || gallery.length == 0) return [null];
    var index = selected_gallery_index();
    if (index < 0 || index >= gallery.length) index = 0;
    var item = gallery[index];
    // gradio 4+: {image: FileData, caption}; the gallery input is preprocessed, so hand it a list
    if (item && !Array.isArray(item) && typeof item === 'object' && 'image' in item) return [[item]];
    return [item];
}

function switch_to_tab_index(index) {
    var buttons = gradioApp().querySelectorAll('#tabs > .tab-nav > button, #tabs [role="tab"]');
    if (buttons[index]) buttons[index].click();
}
function switch_to_txt2img() { switch_to_tab_index(0); return Array.from(arguments); }
function switch_to_img2img() { switch_to_tab_index(1); return Array.from(arguments); }
function switch_to_extras() { switch_to_tab_index(2); return Array.from(arguments); }
